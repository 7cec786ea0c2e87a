-- Nothing to undo on PostgreSQL (see up.sql): its generated columns cannot be VIRTUAL.
SELECT 1;
