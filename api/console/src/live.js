// The live stream (/api/v1/live, Server-Sent Events with the Authorization header via
// fetch-event-source): incident events fanned out to the views, a recent feed, the
// "new critical" highlight and beep (Web Audio, only after the user has interacted).
import { reactive } from 'vue'
import { fetchEventSource } from '@microsoft/fetch-event-source'
import { authHeader, refresh, signedOut } from './api.js'

const MUTE_KEY = 'ganzhi.muted'

export const live = reactive({
  state: 'idle', // idle | connecting | open | retrying | unavailable
  feed: [], // newest first, at most 50 events
  fresh: {}, // incident id -> time it became new (highlight)
  muted: readMuted(),
  version: 0, // bumped on resync: lists reload
})

const listeners = new Set()
let controller = null
let lastId = null
let audio = null
let interacted = false
let stale = false // the server ended the stream: get a new access token before reconnecting

function readMuted () {
  try { return localStorage.getItem(MUTE_KEY) === '1' } catch { return false }
}

export function setMuted (muted) {
  live.muted = muted
  try { localStorage.setItem(MUTE_KEY, muted ? '1' : '0') } catch { /* ignore */ }
}

/** Subscribe to incident events; returns the unsubscribe function. */
export function onIncident (fn) {
  listeners.add(fn)
  return () => listeners.delete(fn)
}

// Autoplay policy: an AudioContext may only start after a user gesture.
for (const type of ['pointerdown', 'keydown']) {
  window.addEventListener(type, () => {
    interacted = true
    if (audio && audio.state === 'suspended') audio.resume().catch(() => {})
  }, { capture: true, passive: true })
}

export function beep () {
  if (live.muted || !interacted) return
  try {
    audio = audio || new AudioContext()
    const t = audio.currentTime
    for (const [i, freq] of [880, 660].entries()) {
      const osc = audio.createOscillator()
      const gain = audio.createGain()
      osc.type = 'sine'
      osc.frequency.value = freq
      gain.gain.setValueAtTime(0.0001, t + i * 0.18)
      gain.gain.exponentialRampToValueAtTime(0.2, t + i * 0.18 + 0.02)
      gain.gain.exponentialRampToValueAtTime(0.0001, t + i * 0.18 + 0.16)
      osc.connect(gain).connect(audio.destination)
      osc.start(t + i * 0.18)
      osc.stop(t + i * 0.18 + 0.17)
    }
  } catch { /* no audio device: the highlight still shows */ }
}

class Fatal extends Error {}

function handle (event) {
  const incident = event.incident
  live.feed.unshift(event)
  if (live.feed.length > 50) live.feed.length = 50
  if (incident && (event.action === 'opened' || event.action === 'reopened' ||
      event.action === 'escalated')) {
    live.fresh[incident.id] = Date.now()
    setTimeout(() => { delete live.fresh[incident.id] }, 60_000)
    if (incident.severity === 'critical' && incident.status === 'open') beep()
  }
  for (const fn of listeners) fn(event)
}

export function startLive () {
  if (controller) return
  controller = new AbortController()
  const signal = controller.signal
  live.state = 'connecting'
  let delay = 1000
  fetchEventSource('/api/v1/live', {
    signal,
    openWhenHidden: true,
    async fetch (url, init) {
      // The server ends a stream about a minute after its token expired (or when the
      // account changed): refresh first, then resume after the last event seen.
      if (stale) {
        stale = false
        if (!(await refresh())) { signedOut(); throw new Fatal('signed out') }
      }
      const headers = { ...(await authHeader()) }
      // fetch-event-source keeps its own 'last-event-id'; one spelling only, or the
      // header would be sent twice ("5, 5") and refused.
      for (const [k, v] of Object.entries(init.headers || {})) {
        if (k.toLowerCase() !== 'last-event-id') headers[k] = v
      }
      if (lastId) headers['Last-Event-ID'] = lastId
      return fetch(url, { ...init, headers })
    },
    async onopen (response) {
      const type = response.headers.get('content-type') || ''
      if (response.ok && type.startsWith('text/event-stream')) {
        live.state = 'open'
        delay = 1000
        return
      }
      if (response.status === 401) {
        if (await refresh()) throw new Error('retry')
        signedOut()
        throw new Fatal('signed out')
      }
      if (response.status === 404) { live.state = 'unavailable'; throw new Fatal('no live') }
      throw new Error(`live: ${response.status}`)
    },
    onmessage (msg) {
      if (msg.id) lastId = msg.id
      if (msg.event === 'resync') { live.version++; return }
      if (msg.event !== 'incident' || !msg.data) return
      try { handle(JSON.parse(msg.data)) } catch { /* a malformed event is skipped */ }
    },
    onclose () {
      live.state = 'retrying'
      stale = true
      throw new Error('closed') // the server ended it: reconnect (onerror's delay)
    },
    onerror (err) {
      if (err instanceof Fatal || signal.aborted) {
        if (!signal.aborted && live.state !== 'unavailable') live.state = 'idle'
        throw err
      }
      live.state = 'retrying'
      delay = Math.min(delay * 2, 30_000)
      return delay
    },
  }).catch(() => {})
}

export function stopLive () {
  if (controller) controller.abort()
  controller = null
  lastId = null
  stale = false
  live.state = 'idle'
  live.feed.length = 0
  for (const id of Object.keys(live.fresh)) delete live.fresh[id]
}
