-- Nothing to change on PostgreSQL: every text column has been COLLATE "C" since it was created (see
-- the applies migration). "C" compares bytes and VARCHAR never pads, so trailing spaces already count,
-- which is what this migration gives the MySQL tree. The version exists so every tree carries the
-- same migrations.
SELECT 1;
