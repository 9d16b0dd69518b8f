-- reporting.failed_syncs_daily: per local day (of the message) and reason,
-- how many Social25 messages failed to sync to Salesforce.
CREATE VIEW reporting.failed_syncs_daily AS
SELECT
    dt,
    log_message,
    COUNT(*) AS failed_messages
FROM social25.failed_syncs
GROUP BY dt, log_message
