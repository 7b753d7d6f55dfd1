-- Schema 15: the same CHECK constraints, written as comparisons. SQLite evaluates a CHECK
-- of the form `x IN ('a', 'b', 'c')` (three values or more) by building a temporary b-tree
-- of the list on every row written: a page cache, a zeroed page and their frees, seven
-- times per echo turn (about a tenth of the store's instructions). `x = 'a' OR x = 'b' OR
-- ...` accepts exactly the same values without it. Only the text of the constraints in the
-- schema changes (existing rows satisfy both forms, nothing on disk moves), which SQLite
-- documents as a safe use of `writable_schema`; the migration runner then bumps
-- `schema_version` so the new text is read. `replace` leaves a table whose constraint
-- reads differently as it was (slower, not wrong).
PRAGMA writable_schema = ON;
UPDATE sqlite_master SET sql = replace(sql,
    'CHECK (role IN (''user'', ''assistant'', ''tool''))',
    'CHECK (role = ''user'' OR role = ''assistant'' OR role = ''tool'')')
  WHERE type = 'table' AND name = 'messages';
UPDATE sqlite_master SET sql = replace(sql,
    'CHECK (status IN (''queued'', ''running'', ''ok'', ''error'', ''aborted'', ''coalesced''))',
    'CHECK (status = ''queued'' OR status = ''running'' OR status = ''ok'' OR status = ''error'' OR status = ''aborted'' OR status = ''coalesced'')')
  WHERE type = 'table' AND name = 'runs';
UPDATE sqlite_master SET sql = replace(sql,
    'CHECK (state IN (''pending'', ''done'', ''blocked''))',
    'CHECK (state = ''pending'' OR state = ''done'' OR state = ''blocked'')')
  WHERE type = 'table' AND name = 'channel_inbound';
UPDATE sqlite_master SET sql = replace(sql,
    'CHECK (state IN (''pending'', ''sent'', ''failed''))',
    'CHECK (state = ''pending'' OR state = ''sent'' OR state = ''failed'')')
  WHERE type = 'table' AND name = 'channel_deliveries';
UPDATE sqlite_master SET sql = replace(sql,
    'CHECK (outcome IN (''running'', ''ok'', ''error'', ''skipped'', ''missed''))',
    'CHECK (outcome = ''running'' OR outcome = ''ok'' OR outcome = ''error'' OR outcome = ''skipped'' OR outcome = ''missed'')')
  WHERE type = 'table' AND name = 'cron_runs';
PRAGMA writable_schema = OFF;
