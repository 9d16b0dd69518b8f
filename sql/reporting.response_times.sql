-- reporting.response_times: per local day, source and agent, how fast the
-- first reply came. answered_chats counts chats that were not missed; the
-- average and the percentiles are over those that got a reply.
--
-- The percentiles are exact percentile_cont, written out so that every
-- engine gives the same number (DataFusion's own percentile_cont rounds the
-- interpolation weight to 6 digits): the value at the 1-based position
-- pos = 1 + p * (n - 1) among the n replies in order, interpolated linearly
-- between positions floor(pos) and floor(pos) + 1.
CREATE VIEW reporting.response_times AS
WITH ranked AS (
    SELECT
        dt, source, agent_name, first_response_seconds AS x,
        ROW_NUMBER() OVER (PARTITION BY dt, source, agent_name ORDER BY first_response_seconds NULLS LAST) AS rn,
        1 + 0.5 * (COUNT(first_response_seconds) OVER (PARTITION BY dt, source, agent_name) - 1) AS p50_pos,
        1 + 0.9 * (COUNT(first_response_seconds) OVER (PARTITION BY dt, source, agent_name) - 1) AS p90_pos
    FROM reporting.chats
    WHERE NOT is_missed
)
SELECT
    dt,
    source,
    agent_name,
    COUNT(*) AS answered_chats,
    AVG(x) AS avg_first_response_seconds,
    SUM(CASE WHEN rn = FLOOR(p50_pos) THEN x * (1 - (p50_pos - FLOOR(p50_pos)))
             WHEN rn = FLOOR(p50_pos) + 1 THEN x * (p50_pos - FLOOR(p50_pos)) END) AS p50_first_response_seconds,
    SUM(CASE WHEN rn = FLOOR(p90_pos) THEN x * (1 - (p90_pos - FLOOR(p90_pos)))
             WHEN rn = FLOOR(p90_pos) + 1 THEN x * (p90_pos - FLOOR(p90_pos)) END) AS p90_first_response_seconds
FROM ranked
GROUP BY dt, source, agent_name
