-- Nothing to do on SQLite: its generated columns stay VIRTUAL (it has no purge threads; see the MySQL
-- tree). The version keeps both trees in step.
SELECT 1;
