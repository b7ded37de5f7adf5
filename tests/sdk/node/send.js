// Sends one visitor's journey through @segment/analytics-node.
//
// Usage: node send.js HOST WRITE_KEY USER_ID ANONYMOUS_ID EMAIL REVENUE
// Prints {"statuses": [...], "bodies": [...], "errors": [...]} once flushed:
// the HTTP status of every request and the exact bodies sent, so that a
// test can replay them.
const { Analytics } = require('@segment/analytics-node')

const [host, writeKey, userId, anonymousId, email, revenue] = process.argv.slice(2)
const analytics = new Analytics({ writeKey, host, flushAt: 20, flushInterval: 500, maxRetries: 0 })
const statuses = []
const bodies = []
const errors = []
analytics.on('http_request', (request) => bodies.push(request.body))
analytics.on('http_response', (response) => statuses.push(response.status))
analytics.on('error', (error) => errors.push(String((error && error.code) || error)))

analytics.page({ anonymousId, category: 'Docs', name: 'Home', properties: { path: '/' } })
analytics.identify({ userId, traits: { email, firstName: 'Ada', lastName: 'Lovelace' } })
analytics.alias({ userId, previousId: anonymousId })
analytics.track({
  userId,
  event: 'Order Completed',
  properties: { order_id: 'o-1', revenue: Number(revenue), currency: 'GBP' },
})

analytics.closeAndFlush({ timeout: 20000 }).then(() => {
  console.log(JSON.stringify({ statuses, bodies, errors }))
})
