import { afterEach, describe, expect, it } from 'vitest'
import * as repo from './repo.ts'
import { createCredential } from './soft-authenticator.test-support.ts'
import { Client, ORIGIN, setup, type Harness } from './test-setup.test-support.ts'

let h: Harness
afterEach(async () => {
  await h?.close()
})

type Options = { challengeId: string; options: Parameters<typeof createCredential>[0] }

async function registerPasskey(client: Client, body: Record<string, string> = {}): Promise<Response> {
  const res = await client.request('/_caje/register/options', { json: body })
  if (res.status !== 200) return res
  const o = (await res.json()) as Options
  const { response } = createCredential(o.options, ORIGIN)
  return client.request('/_caje/register/verify', { json: { ...body, challengeId: o.challengeId, response, name: 'key' } })
}

const inviteToken = async (c: Client) => ((await (await c.request('/_caje/invites', { json: {} })).json()) as { url: string }).url.split('/').pop()!

describe('removing an admin', () => {
  it('ends their sessions, revokes their API tokens and closes their open invites', async () => {
    h = await setup()
    const ada = h.client()
    await ada.signInWithPassword()
    expect((await registerPasskey(ada)).status).toBe(200)
    const bob = h.client()
    expect((await registerPasskey(bob, { invite: await inviteToken(ada), adminName: 'Bob' })).status).toBe(200)
    await bob.page('/_caje/list')
    const bobId = (await repo.listAdmins(h.deps.db)).find((a) => a.name === 'Bob')!.id

    // What Bob keeps before he is removed: a token for scripts and an invite link nobody used.
    const token = ((await (await bob.request('/_caje/tokens', { json: { name: 'deploy' } })).json()) as { secret: string }).secret
    const kept = await inviteToken(bob)
    const asBob = { authorization: `Bearer ${token}`, accept: 'application/json' }
    expect((await h.client().request('/_caje/purge', { json: { all: true }, headers: asBob })).status).toBe(200)
    expect((await h.client().request('/_caje/list', { headers: asBob })).status).toBe(200)

    await ada.page('/_caje/passkeys')
    expect((await ada.request(`/_caje/admins/${bobId}/remove`, { json: {} })).status).toBe(200)

    expect((await h.client().request('/_caje/purge', { json: { all: true }, headers: asBob })).status).toBe(401)
    expect((await h.client().request('/_caje/list', { headers: asBob })).status).toBe(401)
    expect((await bob.request('/_caje/list', { headers: { accept: 'application/json' } })).status).toBe(401)
    expect((await h.client().page(`/_caje/invite/${kept}`)).res.status).toBe(410)
    const again = await registerPasskey(h.client(), { invite: kept, adminName: 'Bob again' })
    expect(again.status).toBe(400)
    expect((await repo.listAdmins(h.deps.db)).map((a) => a.name)).toEqual(['Ada'])
    // The token stays listed, as revoked; Ada's own access is untouched.
    expect((await repo.listApiTokens(h.deps.db)).map((t) => t.revoked_at !== null)).toEqual([true])
    expect((await ada.request('/_caje/list', { headers: { accept: 'application/json' } })).status).toBe(200)
  })

  it('leaves the other admins’ tokens and invites alone', async () => {
    h = await setup()
    const ada = h.client()
    await ada.signInWithPassword()
    expect((await registerPasskey(ada)).status).toBe(200)
    const bob = h.client()
    expect((await registerPasskey(bob, { invite: await inviteToken(ada), adminName: 'Bob' })).status).toBe(200)
    await bob.page('/_caje/list')
    const token = ((await (await ada.request('/_caje/tokens', { json: { name: 'ci' } })).json()) as { secret: string }).secret
    const open = await inviteToken(ada)
    const bobId = (await repo.listAdmins(h.deps.db)).find((a) => a.name === 'Bob')!.id
    expect((await ada.request(`/_caje/admins/${bobId}/remove`, { json: {} })).status).toBe(200)
    expect((await h.client().request('/_caje/list', { headers: { authorization: `Bearer ${token}`, accept: 'application/json' } })).status).toBe(200)
    expect((await h.client().page(`/_caje/invite/${open}`)).res.status).toBe(200)
  })
})
