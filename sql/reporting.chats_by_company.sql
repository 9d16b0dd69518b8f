-- reporting.chats_by_company: Social Intents chats and CRM conversations,
-- joined to CRM companies by the visitor's email (lower-cased) through
-- crm.contacts; per local day and company: chats, missed chats, missed rate.
--
-- A Social Intents chat is missed when the API calls it Missed; a CRM
-- conversation when nobody was assigned to it. Deleted contacts and
-- conversations are left out. An email held by contacts of several companies
-- counts for one of them (the smallest company_id), so no chat is counted
-- twice; chats whose email is no contact's are not in this view.
CREATE VIEW reporting.chats_by_company AS
WITH contact_company AS (
    SELECT lower(email) AS email, MIN(company_id) AS company_id
    FROM crm.contacts
    WHERE deleted_at IS NULL AND email IS NOT NULL AND company_id IS NOT NULL
    GROUP BY lower(email)
),
all_chats AS (
    SELECT dt, lower(visitor_email) AS email, chat_type = 'Missed' AS is_missed
    FROM socialintents.chats
    UNION ALL
    SELECT dt, lower(visitor_email) AS email, assigned_to_user_id IS NULL AS is_missed
    FROM crm.conversations
    WHERE deleted_at IS NULL
)
SELECT
    ch.dt,
    cc.company_id,
    co.name AS company_name,
    COUNT(*) AS chats,
    SUM(CASE WHEN ch.is_missed THEN 1 ELSE 0 END) AS missed_chats,
    CAST(SUM(CASE WHEN ch.is_missed THEN 1 ELSE 0 END) AS DOUBLE) / COUNT(*) AS missed_rate
FROM all_chats ch
JOIN contact_company cc ON cc.email = ch.email
LEFT JOIN crm.companies co ON co.company_id = cc.company_id
GROUP BY ch.dt, cc.company_id, co.name
