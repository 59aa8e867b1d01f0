import http from 'node:http'

/** A local stand-in for the notification webhook (NOTIFY_WEBHOOK_URL): every body it receives, in order. */
export interface HookServer {
  url: string
  received: string[]
  close(): void
}

export async function startHookServer(): Promise<HookServer> {
  const received: string[] = []
  const server = http.createServer((req, res) => {
    let body = ''
    req.on('data', (d: Buffer) => (body += d.toString()))
    req.on('end', () => {
      received.push(body)
      res.writeHead(200, { 'content-type': 'application/json' }).end('{"ok":true}')
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  return { url: `http://127.0.0.1:${(server.address() as { port: number }).port}/hook`, received, close: () => server.close() }
}
