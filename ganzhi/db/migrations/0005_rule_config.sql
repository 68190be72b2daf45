-- The rules model kept in the database (stream/rules/model.py): one row per device class
-- and scope. The stream worker polls this table and applies a change on its next
-- evaluation; `ganzhi rules` edits it.
CREATE TABLE rule_config (
  device_class text        NOT NULL CHECK (device_class IN ('cold_store', 'elevator', 'device_health')),
  scope        text        NOT NULL CHECK (scope IN ('defaults', 'site', 'device')),
  scope_key    text        NOT NULL DEFAULT '',
  params       jsonb       NOT NULL CHECK (jsonb_typeof(params) = 'object'),
  updated_at   timestamptz NOT NULL DEFAULT now(),
  updated_by   text,
  PRIMARY KEY (device_class, scope, scope_key),
  CHECK ((scope = 'defaults') = (scope_key = ''))
);
