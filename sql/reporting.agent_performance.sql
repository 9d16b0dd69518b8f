-- reporting.agent_performance: per local day, source and agent. chats counts
-- the agent's rows of reporting.chats; answered_chats those with a first
-- response; the median and p90 and within_target (first_response_seconds <=
-- ${first_response_target_seconds}) are over the answered ones;
-- avg_duration_seconds over the agent's chats that have a duration.
--
-- The median and p90 are exact percentile_cont, written out as in
-- reporting.response_times (the same number in every engine).
CREATE VIEW reporting.agent_performance AS
WITH ranked AS (
    SELECT
        dt, source, agent_name, first_response_seconds AS x, duration_seconds,
        ROW_NUMBER() OVER (PARTITION BY dt, source, agent_name ORDER BY first_response_seconds NULLS LAST) AS rn,
        1 + 0.5 * (COUNT(first_response_seconds) OVER (PARTITION BY dt, source, agent_name) - 1) AS p50_pos,
        1 + 0.9 * (COUNT(first_response_seconds) OVER (PARTITION BY dt, source, agent_name) - 1) AS p90_pos
    FROM reporting.chats
)
SELECT
    dt,
    source,
    agent_name,
    COUNT(*) AS chats,
    SUM(CASE WHEN x IS NOT NULL THEN 1 ELSE 0 END) AS answered_chats,
    SUM(CASE WHEN rn = FLOOR(p50_pos) THEN x * (1 - (p50_pos - FLOOR(p50_pos)))
             WHEN rn = FLOOR(p50_pos) + 1 THEN x * (p50_pos - FLOOR(p50_pos)) END) AS median_first_response_seconds,
    SUM(CASE WHEN rn = FLOOR(p90_pos) THEN x * (1 - (p90_pos - FLOOR(p90_pos)))
             WHEN rn = FLOOR(p90_pos) + 1 THEN x * (p90_pos - FLOOR(p90_pos)) END) AS p90_first_response_seconds,
    SUM(CASE WHEN x <= ${first_response_target_seconds} THEN 1 ELSE 0 END) AS within_target,
    AVG(duration_seconds) AS avg_duration_seconds
FROM ranked
GROUP BY dt, source, agent_name
