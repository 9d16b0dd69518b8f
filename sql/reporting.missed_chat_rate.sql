-- reporting.missed_chat_rate: per local day, source and channel (widget),
-- how many chats there were and what share of them nobody answered.
CREATE VIEW reporting.missed_chat_rate AS
SELECT
    dt,
    source,
    channel,
    COUNT(*) AS chats,
    SUM(CASE WHEN is_missed THEN 1 ELSE 0 END) AS missed_chats,
    CAST(SUM(CASE WHEN is_missed THEN 1 ELSE 0 END) AS DOUBLE) / COUNT(*) AS missed_rate
FROM reporting.chats
GROUP BY dt, source, channel
