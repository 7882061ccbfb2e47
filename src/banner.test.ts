import { describe, expect, it } from 'vitest'
import { startBanner, type BannerInput } from './banner.ts'

const base: BannerInput['config'] = { nodeId: 'n1', region: 'ams', origin: undefined, sites: new Map(), publicOrigin: 'http://localhost:8080' }

describe('start-up banner', () => {
  it('with the demo origin: suggests its cacheable page, at the address passkeys work on', () => {
    const text = startBanner({ config: base, url: 'http://127.0.0.1:8080', demoOrigin: { url: 'http://127.0.0.1:40000' }, notices: [] }).join('\n')
    expect(text).toContain('caje is listening on http://127.0.0.1:8080 (node n1, region ams)')
    expect(text).toContain('curl -i http://localhost:8080/cacheable')
    expect(text).toContain('admin:  http://localhost:8080/_caje/')
    expect(text).toContain('health: http://localhost:8080/_caje/health')
    expect(text).toMatch(/passkeys work only at this address \(CAJE_PUBLIC_ORIGIN; WebAuthn refuses IP addresses such as 127\.0\.0\.1\)/)
  })

  it('with CAJE_ORIGIN: no demo path', () => {
    const config = { ...base, origin: new URL('https://origin.example/') }
    const text = startBanner({ config, url: 'http://127.0.0.1:8080', notices: [] }).join('\n')
    expect(text).toContain('origin: https://origin.example/')
    expect(text).not.toContain('/cacheable')
    expect(text).toContain('curl -i http://localhost:8080/ ')
  })

  it('uses the listening address when the public origin does not name this node', () => {
    const text = startBanner({ config: { ...base, publicOrigin: 'http://localhost:0' }, url: 'http://127.0.0.1:41234', notices: [] }).join('\n')
    expect(text).toContain('curl -i http://127.0.0.1:41234/ ')
    const prod = startBanner({ config: { ...base, publicOrigin: 'https://cdn.example.com' }, url: 'http://127.0.0.1:8080', notices: [] }).join('\n')
    expect(prod).toContain('curl -i https://cdn.example.com/ ')
  })

  it('names the internal listener when peers have one of their own', () => {
    expect(startBanner({ config: base, url: 'http://127.0.0.1:8080', notices: [] }).join('\n')).not.toContain('internal routes')
    const text = startBanner({ config: base, url: 'http://127.0.0.1:8080', internalListenUrl: 'http://[fd00::1]:8081', notices: [] }).join('\n')
    expect(text).toContain('  internal routes (peers only): http://[fd00::1]:8081/_caje/internal/')
  })
})
