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
    'socialintents' AS source,
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
    'social25' AS source,
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
-- Business seconds, without converting any timestamp to local time: each
-- chat joins its day in meta.calendar by equality. A wait within that day,
-- on a day with at most one business interval (the usual case), overlaps
-- that interval only: computed directly. A wait within a day of several
-- intervals joins that day's intervals by equality; a wait that crosses
-- midnight (few) joins every interval it overlaps (a range join). Those
-- overlaps are summed per chat.
located AS (
    SELECT
        b.*, d.opens_at, d.closes_at, d.business_intervals,
        COALESCE(b.first_message_at >= d.starts_at AND b.first_response_at <= d.ends_at, FALSE)
            AS within_day
    FROM meta.calendar d
    RIGHT JOIN base b ON d.dt = b.dt
),
overlapping AS (
    SELECT w.source, w.chat_id, w.first_message_at, w.first_response_at, h.opens_at, h.closes_at
    FROM located w
    JOIN meta.business_hours h ON h.dt = w.dt
    WHERE w.within_day AND w.business_intervals > 1 AND w.first_response_seconds IS NOT NULL
    UNION ALL
    SELECT w.source, w.chat_id, w.first_message_at, w.first_response_at, h.opens_at, h.closes_at
    FROM located w
    JOIN meta.business_hours h ON h.opens_at < w.first_response_at AND h.closes_at > w.first_message_at
    WHERE NOT w.within_day AND w.first_response_seconds IS NOT NULL
),
business AS (
    SELECT
        source, chat_id,
        SUM(LEAST(CAST(first_response_at AS BIGINT), CAST(closes_at AS BIGINT))
          - GREATEST(CAST(first_message_at AS BIGINT), CAST(opens_at AS BIGINT))) / 1e6 AS seconds
    FROM overlapping
    WHERE opens_at < first_response_at AND closes_at > first_message_at
    GROUP BY source, chat_id
)
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
    -- null without a reply; 0 when the wait overlapped no business interval
    CASE
        WHEN b.first_response_seconds IS NULL THEN NULL
        WHEN NOT b.within_day OR b.business_intervals > 1 THEN COALESCE(z.seconds, 0.0)
        WHEN b.opens_at IS NULL THEN 0.0
        ELSE GREATEST(0, LEAST(CAST(b.first_response_at AS BIGINT), CAST(b.closes_at AS BIGINT))
            - GREATEST(CAST(b.first_message_at AS BIGINT), CAST(b.opens_at AS BIGINT))) / 1e6
    END AS first_response_business_seconds
-- (business on the left: the hash table is built on the few waits summed
-- above, not on every chat)
FROM business z
RIGHT JOIN located b ON z.source = b.source AND z.chat_id = b.chat_id
