-- reporting.chats: one row per chat from every source; the other reports
-- are built on it. A new source joins by adding a UNION ALL branch with the
-- same columns:
--   source, chat_id, channel, agent_name, started_at, dt, is_missed,
--   first_response_seconds, message_count
--
-- first_response_seconds: the first agent message at or after the customer's
-- first message, minus that customer message, in seconds; null when nobody
-- replied.
--
-- Social Intents: agent messages are messageToVisitor, customer messages
-- messageToAgent; a chat is missed when the API calls it Missed.
-- Social25: a conversation is a chat; channel is its platform source
-- (facebook, whatsapp, ...); outbound messages are the agent's, inbound the
-- customer's; it is missed when it has inbound messages and no outbound one;
-- agent_name is the assigned agent's first and last name.
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
),
s25_stats AS (
    SELECT
        conversation_id,
        MIN(CASE WHEN outbound = false THEN sent_at END) AS first_in,
        SUM(CASE WHEN outbound = false THEN 1 ELSE 0 END) AS inbound_messages,
        SUM(CASE WHEN outbound = true THEN 1 ELSE 0 END) AS outbound_messages,
        COUNT(*) AS message_count
    FROM social25.messages
    GROUP BY conversation_id
),
s25_first_reply AS (
    SELECT s.conversation_id, MIN(m.sent_at) AS first_out
    FROM s25_stats s
    JOIN social25.messages m
      ON m.conversation_id = s.conversation_id
     AND m.outbound = true
     AND m.sent_at >= s.first_in
    GROUP BY s.conversation_id
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
UNION ALL
SELECT
    'social25' AS source,
    c.conversation_id AS chat_id,
    c.platform_source AS channel,
    CASE WHEN a.agent_id IS NULL THEN NULL ELSE concat_ws(' ', a.first_name, a.last_name) END AS agent_name,
    c.created_at AS started_at,
    c.dt,
    COALESCE(s.inbound_messages, 0) > 0 AND COALESCE(s.outbound_messages, 0) = 0 AS is_missed,
    (CAST(r.first_out AS BIGINT) - CAST(s.first_in AS BIGINT)) / 1000000.0 AS first_response_seconds,
    COALESCE(s.message_count, 0) AS message_count
FROM social25.conversations c
LEFT JOIN s25_stats s ON s.conversation_id = c.conversation_id
LEFT JOIN s25_first_reply r ON r.conversation_id = c.conversation_id
LEFT JOIN social25.agents a ON a.agent_id = c.agent_id
