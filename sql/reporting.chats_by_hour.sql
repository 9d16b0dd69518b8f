-- reporting.chats_by_hour: chats and missed chats per local day, source and
-- local hour of the start (local_hour 0-23 in the pipeline timezone), with
-- the ISO weekday (1 = Monday ... 7 = Sunday) for weekday x hour heatmaps.
CREATE VIEW reporting.chats_by_hour AS
SELECT
    dt,
    source,
    weekday,
    local_hour,
    COUNT(*) AS chats,
    SUM(CASE WHEN is_missed THEN 1 ELSE 0 END) AS missed_chats
FROM reporting.chats
GROUP BY dt, source, weekday, local_hour
