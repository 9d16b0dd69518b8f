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
-- source is CAST(... AS STRING): the same text in every engine, and in
-- DataFusion the string type its tables' columns have (Utf8View), so that
-- the joins below move 16-byte views rather than copy each chat's source name.
--
-- Social Intents: agent messages are messageToVisitor, customer messages
-- messageToAgent; a chat is missed when the API calls it Missed. The chat's
-- first_message_at and first_response_at are computed from its messages when
-- it is written (socialintents.chats), so this view reads no message.
-- Social25: a conversation is a chat; channel is its platform source
-- (facebook, whatsapp, ...); outbound messages are the agent's, inbound the
-- customer's; it is missed when it has inbound messages and no outbound one;
-- agent_name is the assigned agent's first and last name. The message facts
-- come from social25.conversation_stats, written with the messages.
CREATE VIEW reporting.chats AS
WITH base AS (
SELECT
    CAST('socialintents' AS STRING) AS source,
    c.chat_id,
    c.widget_id AS channel,
    c.agent_name,
    c.started_at,
    c.dt,
    c.chat_type = 'Missed' AS is_missed,
    (CAST(c.first_response_at AS BIGINT) - CAST(c.first_message_at AS BIGINT)) / 1e6 AS first_response_seconds,
    c.message_count,
    c.first_message_at,
    c.first_response_at,
    CAST(c.duration_seconds AS DOUBLE) AS duration_seconds
FROM socialintents.chats c
UNION ALL
SELECT
    CAST('social25' AS STRING) AS source,
    c.conversation_id AS chat_id,
    c.platform_source AS channel,
    CASE WHEN a.agent_id IS NULL THEN NULL ELSE concat_ws(' ', a.first_name, a.last_name) END AS agent_name,
    c.created_at AS started_at,
    c.dt,
    COALESCE(s.inbound_messages, 0) > 0 AND COALESCE(s.outbound_messages, 0) = 0 AS is_missed,
    (CAST(s.first_response_at AS BIGINT) - CAST(s.first_inbound_at AS BIGINT)) / 1e6 AS first_response_seconds,
    COALESCE(s.message_count, 0) AS message_count,
    s.first_inbound_at AS first_message_at,
    s.first_response_at,
    (CAST(s.last_message_at AS BIGINT) - CAST(s.first_message_at AS BIGINT)) / 1e6 AS duration_seconds
FROM social25.conversations c
LEFT JOIN social25.conversation_stats s ON s.conversation_id = c.conversation_id
LEFT JOIN social25.agents a ON a.agent_id = c.agent_id
),
-- Business seconds, without converting any timestamp to local time and
-- without a range join: meta.business_clock gives, for the quarter hour of
-- any instant t (an equality join), the business time before that quarter
-- hour and the part of it that is open, [opens_us, closes_us). The business
-- time up to t is that sum plus the open part before t, and a wait's
-- business seconds are that at the reply minus that at the customer's first
-- message: exact for a wait of any length, across midnight, weekends and DST
-- days. The first join's sum is taken before the second join, so only one
-- number rides along.
at_message AS (
    SELECT
        b.*,
        m.business_us_before_slot
          + GREATEST(0, LEAST(CAST(b.first_message_at AS BIGINT), m.closes_us) - m.opens_us)
          AS business_us_at_message
    FROM base b
    LEFT JOIN meta.business_clock m
        ON m.slot = CAST(floor(CAST(b.first_message_at AS BIGINT) / 900000000.0) AS INT)
),
clocked AS (
    SELECT
        b.*,
        r.business_us_before_slot
          + GREATEST(0, LEAST(CAST(b.first_response_at AS BIGINT), r.closes_us) - r.opens_us)
          AS business_us_at_response
    FROM at_message b
    LEFT JOIN meta.business_clock r
        ON r.slot = CAST(floor(CAST(b.first_response_at AS BIGINT) / 900000000.0) AS INT)
)
SELECT
    source,
    chat_id,
    channel,
    agent_name,
    started_at,
    dt,
    is_missed,
    first_response_seconds,
    message_count,
    first_message_at,
    first_response_at,
    duration_seconds,
    CAST(date_part('hour', started_at AT TIME ZONE '${timezone}') AS INT) AS local_hour,
    CAST(date_part('isodow', dt) AS INT) AS weekday,
    -- null without a reply; 0 when the wait overlapped no business interval
    CASE
        WHEN first_response_seconds IS NULL THEN NULL
        ELSE COALESCE((business_us_at_response - business_us_at_message) / 1e6, 0.0)
    END AS first_response_business_seconds
FROM clocked
