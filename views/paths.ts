// URLs of the admin app as the browser sees them (the app is mounted at /_caje).

export const ADMIN_BASE = '/_caje'

export const PATHS = {
  list: `${ADMIN_BASE}/list`,
  auth: `${ADMIN_BASE}/auth`,
  authPassword: `${ADMIN_BASE}/auth/password`,
  logout: `${ADMIN_BASE}/logout`,
  logoutAll: `${ADMIN_BASE}/logout/all`,
  access: `${ADMIN_BASE}/passkeys`,
  passkeyRename: (id: string) => `${ADMIN_BASE}/passkeys/${encodeURIComponent(id)}/rename`,
  passkeyRemove: (id: string) => `${ADMIN_BASE}/passkeys/${encodeURIComponent(id)}/remove`,
  adminRemove: (id: string) => `${ADMIN_BASE}/admins/${encodeURIComponent(id)}/remove`,
  invites: `${ADMIN_BASE}/invites`,
  inviteRevoke: (id: string) => `${ADMIN_BASE}/invites/${encodeURIComponent(id)}/revoke`,
  invite: (token: string) => `${ADMIN_BASE}/invite/${encodeURIComponent(token)}`,
  tokens: `${ADMIN_BASE}/tokens`,
  tokenRevoke: (id: string) => `${ADMIN_BASE}/tokens/${encodeURIComponent(id)}/revoke`,
  confirm: (action: string) => `${ADMIN_BASE}/confirm/${action}`,
  purge: `${ADMIN_BASE}/purge`,
  purges: `${ADMIN_BASE}/purges`,
  traffic: `${ADMIN_BASE}/traffic`,
  explain: `${ADMIN_BASE}/explain`,
  purgeConfirm: (kind: string, value: string, soft = false) =>
    `${ADMIN_BASE}/confirm/purge?${new URLSearchParams({ kind, ...(kind === 'all' ? {} : { value }), ...(soft ? { soft: 'yes' } : {}) }).toString()}`,
  nodeForget: (id: string) => `${ADMIN_BASE}/nodes/${encodeURIComponent(id)}/forget`,
  populate: `${ADMIN_BASE}/populate`,
  clearFs: `${ADMIN_BASE}/clear_fs`,
  clearDb: `${ADMIN_BASE}/clear_db`,
  asset: (name: string) => `${ADMIN_BASE}/assets/${name}`,
} as const
