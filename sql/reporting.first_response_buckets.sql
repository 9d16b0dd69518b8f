-- reporting.first_response_buckets: answered chats per local day and source by
-- how long the first response took: 0-30s, 30-60s, 1-2m, 2-5m, 5-15m, 15-60m,
-- 1h+ (each bucket includes its lower bound). bucket_order sorts them.
--
-- Chats are counted by bucket_order, and each count then named: one CASE per
-- chat instead of two, and a number rather than a string to group by.
CREATE VIEW reporting.first_response_buckets AS
SELECT
    dt,
    source,
    CASE bucket_order
        WHEN 1 THEN '0-30s'
        WHEN 2 THEN '30-60s'
        WHEN 3 THEN '1-2m'
        WHEN 4 THEN '2-5m'
        WHEN 5 THEN '5-15m'
        WHEN 6 THEN '15-60m'
        ELSE '1h+'
    END AS bucket,
    bucket_order,
    chats
FROM (
    SELECT
        dt,
        source,
        CASE
            WHEN first_response_seconds < 30 THEN 1
            WHEN first_response_seconds < 60 THEN 2
            WHEN first_response_seconds < 120 THEN 3
            WHEN first_response_seconds < 300 THEN 4
            WHEN first_response_seconds < 900 THEN 5
            WHEN first_response_seconds < 3600 THEN 6
            ELSE 7
        END AS bucket_order,
        COUNT(*) AS chats
    FROM reporting.chats
    WHERE first_response_seconds IS NOT NULL
    GROUP BY 1, 2, 3
) t
