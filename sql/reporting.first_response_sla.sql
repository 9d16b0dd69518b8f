-- reporting.first_response_sla: per local day, source and channel, how many
-- answered chats got their first response within the SLA target
-- (${first_response_target_seconds} s, from meta.reporting_settings), in
-- calendar seconds and in business seconds.
--
-- Method: answered_chats counts chats with a first response; within_target
-- those whose first_response_seconds <= the target; within_target_business
-- the same on first_response_business_seconds. attainment =
-- within_target / answered_chats (a fraction 0-1, null when nobody was
-- answered), attainment_business likewise. Missed chats are not in the
-- denominator; missed_chats is reported beside it, so the other
-- contact-centre formula, within_target / (answered_chats + missed_chats),
-- can be computed from the same row.
CREATE VIEW reporting.first_response_sla AS
SELECT
    dt,
    source,
    channel,
    answered_chats,
    within_target,
    within_target_business,
    CASE WHEN answered_chats = 0 THEN NULL ELSE CAST(within_target AS DOUBLE) / answered_chats END AS attainment,
    CASE WHEN answered_chats = 0 THEN NULL ELSE CAST(within_target_business AS DOUBLE) / answered_chats END AS attainment_business,
    missed_chats
FROM (
    SELECT
        dt,
        source,
        channel,
        SUM(CASE WHEN first_response_seconds IS NOT NULL THEN 1 ELSE 0 END) AS answered_chats,
        SUM(CASE WHEN first_response_seconds <= ${first_response_target_seconds} THEN 1 ELSE 0 END) AS within_target,
        SUM(CASE WHEN first_response_business_seconds <= ${first_response_target_seconds} THEN 1 ELSE 0 END) AS within_target_business,
        SUM(CASE WHEN is_missed THEN 1 ELSE 0 END) AS missed_chats
    FROM reporting.chats
    GROUP BY dt, source, channel
) t
