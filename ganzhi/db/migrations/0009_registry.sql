-- Who may see what: the jurisdiction tree (city -> district -> station, any depth), the
-- registry of sites and devices under it, staff accounts bound to a node, and the audit
-- log of every change. See docs/access.md.
CREATE TABLE jurisdictions (
  id         text        PRIMARY KEY CHECK (id ~ '^[a-z0-9][a-z0-9_-]{0,63}$'),
  parent_id  text        REFERENCES jurisdictions (id),
  name       text        NOT NULL,
  level      text        NOT NULL,  -- e.g. city, district, station: free, for display
  -- '/<root id>/<child id>/.../<id>/': a subtree is every path with this prefix.
  path       text        NOT NULL UNIQUE,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now(),
  CHECK ((parent_id IS NULL) = (path = '/' || id || '/'))
);
CREATE INDEX jurisdictions_path ON jurisdictions (path text_pattern_ops);

-- A supervised business or place: a restaurant or canteen, a cold store, an elevator site.
CREATE TABLE sites (
  id              text        PRIMARY KEY,  -- the site_id of every message and alert
  jurisdiction_id text        NOT NULL REFERENCES jurisdictions (id),
  name            text        NOT NULL,
  category        text        NOT NULL,     -- restaurant, canteen, cold_store, elevator_site...
  address         text        NOT NULL DEFAULT '',
  licence_no      text,                     -- business licence (统一社会信用代码 / 许可证号)
  contact_name    text,
  contact_phone   text,
  created_at      timestamptz NOT NULL DEFAULT now(),
  updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX sites_jurisdiction ON sites (jurisdiction_id);

-- Devices and cameras of a site. ``params`` holds what its rules need (a cold room's
-- variant and set point, an elevator's rated speed and landings, a camera's scenarios).
CREATE TABLE devices (
  site_id       text        NOT NULL REFERENCES sites (id),
  device_id     text        NOT NULL,
  device_class  text        NOT NULL,
  model         text,
  location      text,
  firmware      text,
  params        jsonb       NOT NULL DEFAULT '{}',
  last_seen     timestamptz,
  -- MQTT credentials: issued by provisioning, only a hash is kept.
  mqtt_username text        UNIQUE,
  provisioned_at timestamptz,
  revoked_at    timestamptz,
  created_at    timestamptz NOT NULL DEFAULT now(),
  updated_at    timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (site_id, device_id)
);

-- Every change of the registry, the accounts, keys and provisioning: who, what, when,
-- before and after (secrets never).
CREATE TABLE audit_log (
  id        bigserial   PRIMARY KEY,
  at        timestamptz NOT NULL DEFAULT now(),
  actor     text        NOT NULL,
  action    text        NOT NULL,       -- e.g. site.create, device.update, user.disable
  entity    text        NOT NULL,       -- site, device, jurisdiction, user, api_key...
  entity_id text        NOT NULL,
  site_id   text,                        -- for scoping reads of the log
  jurisdiction_path text,               -- idem, for entities above sites
  before    jsonb,
  after     jsonb
);
CREATE INDEX audit_log_entity ON audit_log (entity, entity_id, id);
CREATE INDEX audit_log_at ON audit_log (at DESC);
