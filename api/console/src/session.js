// The signed-in user: access token in memory only, refresh token in sessionStorage (this
// tab), who they are (/api/v1/auth/me, or the login answer until that endpoint exists).
import { reactive } from 'vue'

const REFRESH_KEY = 'ganzhi.refresh'

// What each role may do (docs/access.md), used when /auth/me is not available.
const ROLE_PERMISSIONS = {
  viewer: ['read'],
  staff: ['read', 'work_incidents'],
  supervisor: ['read', 'work_incidents', 'silence', 'edit_registry', 'read_audit'],
  administrator: ['read', 'work_incidents', 'silence', 'edit_registry', 'read_audit',
    'manage_accounts', 'manage_keys', 'provision', 'operate_receivers'],
}

export const session = reactive({
  access: null,
  expiresAt: 0,
  user: null, // {username, role, jurisdiction_path, permissions}
})

export function refreshToken () {
  try { return sessionStorage.getItem(REFRESH_KEY) } catch { return null }
}

export function setTokens (body) {
  session.access = body.access_token
  session.expiresAt = Date.now() + (body.expires_in || 900) * 1000
  try { sessionStorage.setItem(REFRESH_KEY, body.refresh_token) } catch { /* private mode */ }
  if (body.username) {
    session.user = {
      username: body.username,
      role: body.role,
      jurisdiction_path: body.jurisdiction_path,
      permissions: ROLE_PERMISSIONS[body.role] || ['read'],
      ...(session.user && session.user.username === body.username ? session.user : {}),
    }
  }
}

export function setMe (me) {
  session.user = { ...me, permissions: me.permissions || ROLE_PERMISSIONS[me.role] || ['read'] }
}

export function clearSession () {
  session.access = null
  session.expiresAt = 0
  session.user = null
  try { sessionStorage.removeItem(REFRESH_KEY) } catch { /* ignore */ }
}

export function can (permission) {
  return !!session.user && session.user.permissions.includes(permission)
}
