// Register a device with pushstr over Nostr, as 0xchat does: a kind 22456 event, NIP-04 encrypted to the server.
//
//   node push-settings.mjs <relay-url> <server-pubkey-hex> <user-secret-hex> <device-id> [kinds-json]
//
// <device-id> is what 0xchat sends: on iOS the app's bundle id followed by the APNs token in hex (or the bare
// token), on Android a UnifiedPush endpoint URL. Prints the relay's answer.
import { finalizeEvent, getPublicKey, nip04 } from 'nostr-tools'
import { Relay, useWebSocketImplementation } from 'nostr-tools/relay'
import { hexToBytes } from '@noble/hashes/utils.js'
import WebSocket from 'ws'

useWebSocketImplementation(WebSocket) // Node 20 has no WebSocket of its own; browsers and Node 22+ do

const [relayUrl, serverPubkey, secretHex, deviceId, kindsJson] = process.argv.slice(2)
const secretKey = hexToBytes(secretHex)
const settings = {
  authors: [], // contacts whose messages may wake the device; empty: anyone
  kinds: kindsJson ? JSON.parse(kindsJson) : [4, 44, 1059, 42, 9735, 9, 10, 1, 6, 7], // [] turns pushes off
  deviceId,
  relays: [], // extra relays pushstr should watch for this user
  '#e': [], // NIP-28 channel ids and NIP-29 groups written "<relay host>'<group id>"
  '#p': [getPublicKey(secretKey)],
}
const event = finalizeEvent(
  {
    kind: 22456,
    created_at: Math.floor(Date.now() / 1000),
    tags: [['p', serverPubkey]],
    content: nip04.encrypt(secretKey, serverPubkey, JSON.stringify(settings)),
  },
  secretKey,
)
const relay = await Relay.connect(relayUrl)
try {
  const message = await relay.publish(event) // resolves on the relay's OK true, rejects on OK false
  console.log(JSON.stringify({ id: event.id, accepted: true, message }))
} finally {
  relay.close()
}
