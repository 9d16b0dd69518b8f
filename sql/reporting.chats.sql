-- reporting.chats: one row per chat from every source; the other reports
-- are built on it. A new source joins by adding a UNION ALL branch with the
-- same columns:
--   source, chat_id, channel, agent_name, started_at, dt, is_missed,
--   first_response_seconds, message_count
--
-- first_response_seconds: the first agent message (messageToVisitor) at or
-- after the visitor's first message (messageToAgent), minus that visitor
-- message, in seconds; null when nobody replied.
CREATE VIEW reporting.chats AS
WITH si_first_in AS (
    SELECT chat_id, MIN(sent_at) AS first_in
    FROM socialintents.chat_messages
    WHERE type = 'messageToAgent'
    GROUP BY chat_id
),
si_first_reply AS (
    SELECT f.chat_id, f.first_in, MIN(m.sent_at) AS first_out
    FROM si_first_in f
    JOIN socialintents.chat_messages m
      ON m.chat_id = f.chat_id
     AND m.type = 'messageToVisitor'
     AND m.sent_at >= f.first_in
    GROUP BY f.chat_id, f.first_in
)
SELECT
    'socialintents' AS source,
    c.chat_id,
    c.widget_id AS channel,
    c.agent_name,
    c.started_at,
    c.dt,
    c.chat_type = 'Missed' AS is_missed,
    (CAST(r.first_out AS BIGINT) - CAST(r.first_in AS BIGINT)) / 1000000.0 AS first_response_seconds,
    c.message_count
FROM socialintents.chats c
LEFT JOIN si_first_reply r ON r.chat_id = c.chat_id
