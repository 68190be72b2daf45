// vue-i18n: Chinese by default, English available; the choice is kept in localStorage.
import { createI18n } from 'vue-i18n'
import zhCN from './zh-CN.js'
import en from './en.js'

const KEY = 'ganzhi.locale'
export const LOCALES = [{ code: 'zh-CN', label: '中文' }, { code: 'en', label: 'English' }]

function initial () {
  try {
    const saved = localStorage.getItem(KEY)
    if (LOCALES.some(l => l.code === saved)) return saved
  } catch { /* ignore */ }
  return 'zh-CN'
}

export const i18n = createI18n({
  legacy: false,
  locale: initial(),
  fallbackLocale: 'zh-CN',
  messages: { 'zh-CN': zhCN, en },
  missingWarn: false,
  fallbackWarn: false,
})

export function setLocale (code) {
  i18n.global.locale.value = code
  document.documentElement.lang = code
  try { localStorage.setItem(KEY, code) } catch { /* ignore */ }
}

document.documentElement.lang = initial()
