// Small formatting helpers shared by the views.
import { i18n } from './i18n/index.js'

const t = (...a) => i18n.global.t(...a)
const te = (key) => i18n.global.te(key, i18n.global.locale.value)

export function dateTime (iso) {
  if (!iso) return '—'
  return new Intl.DateTimeFormat(i18n.global.locale.value, {
    year: 'numeric', month: '2-digit', day: '2-digit',
    hour: '2-digit', minute: '2-digit', second: '2-digit', hour12: false,
  }).format(new Date(iso))
}

export function ago (iso, now = Date.now()) {
  if (!iso) return '—'
  const s = Math.round((new Date(iso).getTime() - now) / 1000)
  const fmt = new Intl.RelativeTimeFormat(i18n.global.locale.value, { numeric: 'auto' })
  const abs = Math.abs(s)
  if (abs < 60) return fmt.format(s, 'second')
  if (abs < 3600) return fmt.format(Math.round(s / 60), 'minute')
  if (abs < 86400) return fmt.format(Math.round(s / 3600), 'hour')
  return fmt.format(Math.round(s / 86400), 'day')
}

export function duration (seconds) {
  if (seconds === null || seconds === undefined) return '—'
  const s = Math.round(seconds)
  const zh = i18n.global.locale.value.startsWith('zh')
  if (s < 60) return zh ? `${s} 秒` : `${s} s`
  if (s < 3600) return zh ? `${Math.round(s / 60)} 分钟` : `${Math.round(s / 60)} min`
  const h = (s / 3600).toFixed(1)
  return zh ? `${h} 小时` : `${h} h`
}

// Rule ids and history actions hold dots ("vision.no_mask", "feedback.closed"), which
// vue-i18n would read as paths: look them up in the locale's table directly.
function flat (table, key) {
  const messages = i18n.global.getLocaleMessage(i18n.global.locale.value)[table] || {}
  const v = messages[key]
  return typeof v === 'string' ? v : null
}

export function ruleName (id) {
  if (!id) return '—'
  return flat('rule', id) || id
}

export function actionName (action) {
  return flat('action', action) || action
}

export function valueName (key) {
  return flat('value', key) || key
}

// Registry and delivery values: the word in the user's language, else the raw id.
export const categoryName = (v) => (v ? flat('category', v) || v : '—')
export const deviceClassName = (v) => (v ? flat('deviceClass', v) || v : '—')
export const notifyStateName = (v) => (v ? flat('notifyState', v) || v : '—')
export const deliveryStatusName = (v) => (v ? flat('deliveryStatus', v) || v : '—')
export function clueEventName (event, seq) {
  const name = flat('clueEvent', event) || event
  return seq === null || seq === undefined ? name : `${name} · ${t('seq', { n: seq })}`
}

/** An API error in words: known cases in the user's language, else the server's text. */
export function errorText (e) {
  if (!e || typeof e.status !== 'number') {
    return e instanceof TypeError ? t('apiError.network') : String((e && e.message) || e)
  }
  const d = e.detail
  if (e.status === 422 && Array.isArray(d)) {
    return d.map((item) => {
      const field = Array.isArray(item.loc) ? item.loc[item.loc.length - 1] : ''
      const label = field ? `${valueName(field)}: ` : ''
      if (item.type === 'string_too_long' && item.ctx) return label + t('apiError.tooLong', { n: item.ctx.max_length })
      if (item.type === 'missing' || item.type === 'string_too_short') return label + t('apiError.required')
      return label + t('apiError.invalid', { msg: item.msg })
    }).join('; ')
  }
  const text = typeof d === 'string' ? d : e.message
  if (e.status === 409) {
    const acked = /was acknowledged by (.+?) at /.exec(text)
    if (acked) return t('apiError.acknowledged', { who: acked[1] })
    if (/is (already )?resolved/.test(text)) return t('apiError.resolved')
  }
  if (e.status === 404) return t('apiError.notFound')
  if (e.status === 403) return `${t('apiError.forbidden')} (${text})`
  if (e.status >= 500) return t('apiError.server', { status: e.status })
  return text
}

export function metricName (metric) {
  return te(`metric.${metric}`) ? t(`metric.${metric}`) : metric
}

/** The family of a rule id as the overview groups it. */
export function ruleType (ruleId) {
  const prefix = (ruleId || '').split('.')[0]
  return ['cold_chain', 'elevator', 'vision', 'device'].includes(prefix) ? prefix : 'other'
}

export function formatValue (v) {
  if (v === null || v === undefined) return '—'
  if (typeof v === 'number') return Number.isInteger(v) ? String(v) : v.toFixed(2)
  if (Array.isArray(v)) return v.map(formatValue).join(', ')
  if (typeof v === 'object') return JSON.stringify(v)
  return String(v)
}
