-- reporting.response_times: per local day, source and agent, how fast the
-- first reply came. answered_chats counts chats that were not missed; the
-- average and the percentiles are over those that got a reply.
--
-- The percentiles are percentile_cont: the value at the 1-based position
-- pos = 1 + p * (n - 1) among the n replies in order, interpolated linearly
-- between positions floor(pos) and floor(pos) + 1. chatlake's percentile_cont
-- is exact, as DuckDB's and Spark's are (DataFusion's own, in datafusion-cli,
-- rounds the interpolation weight to 6 digits: see src/query/percentile.rs).
CREATE VIEW reporting.response_times AS
SELECT
    dt,
    source,
    agent_name,
    COUNT(*) AS answered_chats,
    AVG(first_response_seconds) AS avg_first_response_seconds,
    percentile_cont(0.5) WITHIN GROUP (ORDER BY first_response_seconds) AS p50_first_response_seconds,
    percentile_cont(0.9) WITHIN GROUP (ORDER BY first_response_seconds) AS p90_first_response_seconds
FROM reporting.chats
WHERE NOT is_missed
GROUP BY dt, source, agent_name
