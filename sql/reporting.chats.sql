-- reporting.chats: one row per chat from every source; the other reports
-- are built on it. A new source joins by adding a UNION ALL branch with the
-- same columns:
--   source, chat_id, channel, agent_name, started_at, dt, is_missed,
--   first_response_seconds, message_count, first_message_at,
--   first_response_at, duration_seconds
-- (the columns below are then computed for every source at once).
--
-- local_hour: hour of started_at in the pipeline timezone (0-23; both 01:30s
-- of a fall-back night are hour 1, no chat has hour 2 on a spring-forward day).
-- weekday: ISO day of the week of dt (1 = Monday ... 7 = Sunday).
-- first_response_business_seconds: the part of the wait from the customer's
-- first message to the first reply that falls inside meta.business_hours;
-- null when there was no reply, 0 when the whole wait was outside business
-- hours. duration_seconds: Social Intents' duration; Social25: last message
-- minus first message (null without messages).
--
-- first_response_seconds: the first agent message at or after the customer's
-- first message, minus that customer message, in seconds; null when nobody
-- replied.
--
-- ${timezone} is filled in from meta.reporting_settings.
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
        MIN(sent_at) AS first_message,
        MAX(sent_at) AS last_message,
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
),
base AS (
SELECT
    'socialintents' AS source,
    c.chat_id,
    c.widget_id AS channel,
    c.agent_name,
    c.started_at,
    c.dt,
    c.chat_type = 'Missed' AS is_missed,
    (CAST(r.first_out AS BIGINT) - CAST(r.first_in AS BIGINT)) / 1000000.0 AS first_response_seconds,
    c.message_count,
    r.first_in AS first_message_at,
    r.first_out AS first_response_at,
    CAST(c.duration_seconds AS DOUBLE) AS duration_seconds
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
    COALESCE(s.message_count, 0) AS message_count,
    s.first_in AS first_message_at,
    r.first_out AS first_response_at,
    (CAST(s.last_message AS BIGINT) - CAST(s.first_message AS BIGINT)) / 1000000.0 AS duration_seconds
FROM social25.conversations c
LEFT JOIN s25_stats s ON s.conversation_id = c.conversation_id
LEFT JOIN s25_first_reply r ON r.conversation_id = c.conversation_id
LEFT JOIN social25.agents a ON a.agent_id = c.agent_id
)
-- One pass over base: each chat joins the business intervals its wait
-- overlaps (none without a reply), and the overlaps are summed.
SELECT
    b.source,
    b.chat_id,
    b.channel,
    b.agent_name,
    b.started_at,
    b.dt,
    b.is_missed,
    b.first_response_seconds,
    b.message_count,
    b.first_message_at,
    b.first_response_at,
    b.duration_seconds,
    CAST(date_part('hour', b.started_at AT TIME ZONE '${timezone}') AS INT) AS local_hour,
    CAST(date_part('isodow', b.dt) AS INT) AS weekday,
    CASE
        WHEN b.first_response_seconds IS NULL THEN NULL
        -- (no interval: 0; LEAST/GREATEST would skip the NULLs of a missing one)
        ELSE COALESCE(SUM(CASE WHEN h.opens_at IS NULL THEN 0
                               ELSE CAST(LEAST(b.first_response_at, h.closes_at) AS BIGINT)
                                  - CAST(GREATEST(b.first_message_at, h.opens_at) AS BIGINT) END) / 1000000.0, 0.0)
    END AS first_response_business_seconds
FROM base b
LEFT JOIN meta.business_hours h
  ON h.dt >= CAST(b.first_message_at AT TIME ZONE '${timezone}' AS DATE)
 AND h.dt <= CAST(b.first_response_at AT TIME ZONE '${timezone}' AS DATE)
 AND h.opens_at < b.first_response_at
 AND h.closes_at > b.first_message_at
GROUP BY b.source, b.chat_id, b.channel, b.agent_name, b.started_at, b.dt, b.is_missed,
         b.first_response_seconds, b.message_count, b.first_message_at, b.first_response_at, b.duration_seconds
