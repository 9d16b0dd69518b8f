-- reporting.company_conversations: per local day and CRM company, its
-- helpdesk conversations (deleted ones left out), how many are still open,
-- and how many nobody has read. Conversations without a company are grouped
-- under a null company_id.
CREATE VIEW reporting.company_conversations AS
SELECT
    c.dt,
    c.company_id,
    co.name AS company_name,
    co.is_customer,
    COUNT(*) AS conversations,
    SUM(CASE WHEN c.status = 'open' THEN 1 ELSE 0 END) AS open_conversations,
    SUM(CASE WHEN c.is_read = false THEN 1 ELSE 0 END) AS unread_conversations
FROM crm.conversations c
LEFT JOIN crm.companies co ON co.company_id = c.company_id
WHERE c.deleted_at IS NULL
GROUP BY c.dt, c.company_id, co.name, co.is_customer
