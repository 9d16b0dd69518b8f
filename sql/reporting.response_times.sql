-- reporting.response_times: per local day, source and agent, how fast the
-- first reply came. answered_chats counts chats that were not missed; the
-- average and the percentiles (exact, linearly interpolated) are over those
-- that got a reply.
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
