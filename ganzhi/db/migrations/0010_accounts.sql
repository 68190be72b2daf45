-- Staff accounts and their sign-in: each account is bound to a node of the jurisdiction
-- tree and sees that subtree (a root node: everything). Passwords are argon2 hashes;
-- refresh tokens are kept as SHA-256 hashes only, rotated on every use. Failed logins are
-- counted here, so several API processes throttle alike. See docs/access.md.
CREATE TABLE users (
  id              bigserial   PRIMARY KEY,
  username        text        NOT NULL UNIQUE CHECK (username ~ '^[a-z0-9][a-z0-9._-]{1,63}$'),
  display_name    text        NOT NULL DEFAULT '',
  password_hash   text        NOT NULL,
  role            text        NOT NULL
                  CHECK (role IN ('viewer', 'staff', 'supervisor', 'administrator')),
  jurisdiction_id text        NOT NULL REFERENCES jurisdictions (id),
  created_at      timestamptz NOT NULL DEFAULT now(),
  updated_at      timestamptz NOT NULL DEFAULT now(),
  disabled_at     timestamptz
);
CREATE INDEX users_jurisdiction ON users (jurisdiction_id);

-- One row per refresh token ever issued. A sign-in starts a family; each refresh revokes
-- the token it used (replaced_by: its successor). A revoked token that had a successor
-- coming back is a stolen copy: the whole family is revoked.
CREATE TABLE refresh_tokens (
  id          bigserial   PRIMARY KEY,
  user_id     bigint      NOT NULL REFERENCES users (id),
  family      uuid        NOT NULL,
  token_hash  text        NOT NULL UNIQUE,
  issued_at   timestamptz NOT NULL DEFAULT now(),
  expires_at  timestamptz NOT NULL,
  revoked_at  timestamptz,
  replaced_by bigint      REFERENCES refresh_tokens (id)
);
CREATE INDEX refresh_tokens_family ON refresh_tokens (family) WHERE revoked_at IS NULL;
CREATE INDEX refresh_tokens_user ON refresh_tokens (user_id) WHERE revoked_at IS NULL;

-- Failed sign-ins, by the name tried (known or not) and the client address.
CREATE TABLE login_failures (
  username text        NOT NULL,
  ip       text        NOT NULL,
  at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX login_failures_username ON login_failures (username, at);
CREATE INDEX login_failures_ip ON login_failures (ip, at);

-- API keys: an optional expiry, and an optional node of the tree they are limited to.
ALTER TABLE api_keys ADD COLUMN expires_at timestamptz;
ALTER TABLE api_keys ADD COLUMN jurisdiction_id text REFERENCES jurisdictions (id);

-- The evidence endpoint serves a snapshot only to a caller who may see an alert that
-- names it (in its values or one of its transitions): these find that alert.
CREATE INDEX alerts_snapshot ON alerts (("values"->>'snapshot_sha256'))
  WHERE "values" ? 'snapshot_sha256';
CREATE INDEX alert_events_snapshot ON alert_events ((payload->'values'->>'snapshot_sha256'))
  WHERE payload->'values' ? 'snapshot_sha256';

CREATE INDEX audit_log_actor ON audit_log (actor, id);
