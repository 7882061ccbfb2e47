import type { FC } from 'hono/jsx'
import { Layout } from './layout.tsx'
import { PATHS } from './paths.ts'
import { TEXT } from './text.ts'

export interface ErrorPageProps {
  status: number
  message: string
}

export const ErrorPage: FC<ErrorPageProps> = ({ status, message }) => (
  <Layout title={`${TEXT.errors.title} ${status}`} narrow>
    <div data-component="brand-mark">
      {TEXT.brand}
      <small>{TEXT.brandSub}</small>
    </div>
    <section data-component="card" data-kind="danger">
      <h1>
        {TEXT.errors.title} {status}
      </h1>
      <p>{message}</p>
      <p>
        <a href={PATHS.list}>{TEXT.errors.back}</a>
      </p>
    </section>
  </Layout>
)
