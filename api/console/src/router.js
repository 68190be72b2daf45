// Hash routes (/console/#/incidents/12): the API serves one index.html, nothing else to
// configure. Every route but the login needs a session (resumed from the refresh token).
import { createRouter, createWebHashHistory } from 'vue-router'
import { session } from './session.js'
import { resume } from './api.js'

export const router = createRouter({
  history: createWebHashHistory(),
  routes: [
    { path: '/', redirect: '/incidents' },
    { path: '/login', name: 'login', component: () => import('./views/LoginView.vue'),
      meta: { public: true } },
    { path: '/incidents', name: 'incidents', component: () => import('./views/IncidentsView.vue') },
    { path: '/incidents/:id(\\d+)', name: 'incident', component: () => import('./views/IncidentView.vue'),
      props: true },
    { path: '/sites/:siteId', name: 'site', component: () => import('./views/SiteView.vue'), props: true },
    { path: '/sites/:siteId/devices/:deviceId', name: 'device',
      component: () => import('./views/DeviceView.vue'), props: true },
    { path: '/overview', name: 'overview', component: () => import('./views/OverviewView.vue'),
      meta: { wall: true } },
    { path: '/risk', name: 'risk', component: () => import('./views/RiskView.vue') },
    { path: '/:rest(.*)*', name: 'missing', component: () => import('./views/NotFoundView.vue') },
  ],
})

router.beforeEach(async (to) => {
  if (to.meta.public) return true
  if (session.access) return true
  try {
    if (await resume()) return true
  } catch { /* the API is unreachable: sign in again */ }
  return { name: 'login', query: { next: to.fullPath } }
})

// Move focus to the new page's heading (screen readers announce it) after navigation.
router.afterEach(() => {
  setTimeout(() => {
    const h = document.querySelector('main h1')
    if (h) { h.setAttribute('tabindex', '-1'); h.focus({ preventScroll: true }) }
  }, 0)
})
