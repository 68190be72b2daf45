// The API client: JSON over fetch with the Bearer token, one refresh on a 401 (shared by
// concurrent callers: a refresh token is single use), errors as ApiError.
import { session, setTokens, setMe, clearSession, refreshToken } from './session.js'

export class ApiError extends Error {
  constructor (status, detail) {
    super(typeof detail === 'string' ? detail : JSON.stringify(detail))
    this.status = status
    this.detail = detail
  }
}

let refreshing = null
let onSignedOut = () => {}

export function whenSignedOut (fn) { onSignedOut = fn }

/** The session is over (a refresh refused): clear it and go to the sign-in page. */
export function signedOut () { clearSession(); onSignedOut() }

async function post (path, body) {
  return fetch(path, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', Accept: 'application/json' },
    body: JSON.stringify(body),
  })
}

async function errorOf (response) {
  let detail = response.statusText
  try { detail = (await response.json()).detail ?? detail } catch { /* not JSON */ }
  return new ApiError(response.status, detail)
}

/** A new access token from the refresh token; false when the session is over. */
export function refresh () {
  if (!refreshing) {
    refreshing = (async () => {
      const token = refreshToken()
      if (!token) return false
      const response = await post('/api/v1/auth/refresh', { refresh_token: token })
      if (!response.ok) { clearSession(); return false }
      setTokens(await response.json())
      return true
    })().finally(() => { refreshing = null })
  }
  return refreshing
}

/** The Authorization header, refreshing first when the token is (nearly) out. */
export async function authHeader () {
  if (!session.access || Date.now() > session.expiresAt - 30_000) await refresh()
  return session.access ? { Authorization: `Bearer ${session.access}` } : {}
}

async function request (method, path, { params, body, raw } = {}) {
  let url = path
  if (params) {
    const q = new URLSearchParams()
    for (const [k, v] of Object.entries(params)) {
      if (v === undefined || v === null || v === '') continue
      for (const item of Array.isArray(v) ? v : [v]) q.append(k, String(item))
    }
    const s = q.toString()
    if (s) url += (url.includes('?') ? '&' : '?') + s
  }
  for (let attempt = 0; ; attempt++) {
    const headers = { Accept: raw ? '*/*' : 'application/json', ...(await authHeader()) }
    if (body !== undefined) headers['Content-Type'] = 'application/json'
    const response = await fetch(url, {
      method, headers, body: body === undefined ? undefined : JSON.stringify(body),
    })
    if (response.status === 401 && attempt === 0 && await refresh()) continue
    if (response.status === 401) { clearSession(); onSignedOut() }
    if (!response.ok) throw await errorOf(response)
    if (raw) return response
    if (response.status === 204) return null
    return response.json()
  }
}

export const api = {
  get: (path, params) => request('GET', path, { params }),
  post: (path, body) => request('POST', path, { body: body ?? {} }),
  delete: (path) => request('DELETE', path),
  blob: async (path) => (await request('GET', path, { raw: true })).arrayBuffer(),
}

export async function login (username, password) {
  const response = await post('/api/v1/auth/login', { username, password })
  if (!response.ok) throw await errorOf(response)
  setTokens(await response.json())
  await loadMe()
}

export async function loadMe () {
  try {
    setMe(await api.get('/api/v1/auth/me'))
  } catch (e) {
    if (!(e instanceof ApiError) || e.status !== 404) throw e // older API: login answer
  }
}

/** On page load: a session from the refresh token kept in this tab, if any. */
export async function resume () {
  if (session.access) return true
  if (!(await refresh())) return false
  await loadMe()
  return true
}

export async function logout () {
  const token = refreshToken()
  clearSession()
  if (token) await post('/api/v1/auth/logout', { refresh_token: token }).catch(() => {})
}
