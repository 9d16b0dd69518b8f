-- reporting.agent_performance: per local day, source and agent. chats counts
-- the agent's rows of reporting.chats; answered_chats those with a first
-- response; the median and p90 and within_target (first_response_seconds <=
-- ${first_response_target_seconds}) are over the answered ones;
-- avg_duration_seconds over the agent's chats that have a duration.
--
-- The median and p90 are percentile_cont, as in reporting.response_times.
CREATE VIEW reporting.agent_performance AS
SELECT
    dt,
    source,
    agent_name,
    COUNT(*) AS chats,
    COUNT(first_response_seconds) AS answered_chats,
    percentile_cont(0.5) WITHIN GROUP (ORDER BY first_response_seconds) AS median_first_response_seconds,
    percentile_cont(0.9) WITHIN GROUP (ORDER BY first_response_seconds) AS p90_first_response_seconds,
    SUM(CASE WHEN first_response_seconds <= ${first_response_target_seconds} THEN 1 ELSE 0 END) AS within_target,
    AVG(duration_seconds) AS avg_duration_seconds
FROM reporting.chats
GROUP BY dt, source, agent_name
