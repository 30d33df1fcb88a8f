// Drives ONE @stomp/stompjs Client under Node for the stomp_cluster test suite.
//
// Protocol: one JSON object per line on stdin (a command), one JSON object per line on
// stdout (an event). tests/support/stompjs.py is the Python side.
//
// Commands ({"cmd": NAME, "seq": N, ...}); every command is answered with
// {"event": "cmd-done", "seq": N} or {"event": "cmd-failed", "seq": N, "message": ...}:
//   connect     {url, connectHeaders, heartbeatIncoming, heartbeatOutgoing, versions,
//                protocols, forceBinaryWSFrames, splitLargeFrames, maxWebSocketChunkSize,
//                heartbeatToleranceMultiplier, debug}
//   subscribe   {destination, id, headers}
//   unsubscribe {id, headers}
//   send        {destination, body, headers, binaryBody (base64), skipContentLengthHeader}
//   ack / nack  {ref} (a received message's ref) or {messageId, subscription, headers}
//   begin / commit / abort {transaction}
//   disconnect  {headers}            graceful: DISCONNECT with a receipt, then close
//   force-close {}                   close the WebSocket without DISCONNECT
//   silence     {}                   stop sending heart-beats (simulates a hung client)
//   raw         {data} or {base64}   write text / binary straight to the WebSocket
//   exit        {}
// Events ({"event": KIND, ...}):
//   ready, ws-open, connected {headers, version}, message {command, headers, body,
//   isBinaryBody, base64, ref}, receipt {headers}, error {headers, body},
//   disconnected {headers}, heartbeat-received, heartbeat-lost, ws-close {code, reason,
//   wasClean}, ws-error {message}, unhandled-frame {command, headers, body}, debug {message}

import { Buffer } from 'node:buffer';
import { createInterface } from 'node:readline';
import { Client, Versions } from '@stomp/stompjs';
import WebSocket from 'ws';

const MAX_PAYLOAD = 64 * 1024 * 1024;

let client = null;
let nextRef = 0;
const messages = new Map(); // ref -> IMessage, kept until acked or nacked

function emit(event) {
  process.stdout.write(`${JSON.stringify(event)}\n`);
}

function frameBody(frame) {
  const bytes = frame.binaryBody ?? new Uint8Array();
  const text = new TextDecoder('utf-8', { fatal: false }).decode(bytes);
  return {
    body: text,
    isBinaryBody: frame.isBinaryBody,
    base64: Buffer.from(bytes).toString('base64'),
    length: bytes.length,
  };
}

function frameEvent(kind, frame) {
  return { event: kind, command: frame.command, headers: { ...frame.headers }, ...frameBody(frame) };
}

function onMessage(message) {
  const ref = nextRef++;
  messages.set(ref, message);
  emit({ ...frameEvent('message', message), ref });
}

function requireClient() {
  if (client === null) {
    throw new Error('no client: send "connect" first');
  }
  return client;
}

function takeMessage(ref) {
  const message = messages.get(ref);
  if (message === undefined) {
    throw new Error(`no message with ref ${ref}`);
  }
  messages.delete(ref);
  return message;
}

const handlers = {
  connect(cmd) {
    if (client !== null) {
      throw new Error('already connected or connecting');
    }
    const versions = new Versions(cmd.versions ?? ['1.2', '1.1', '1.0']);
    const protocols = cmd.protocols ?? versions.protocolVersions();
    client = new Client({
      webSocketFactory: () => new WebSocket(cmd.url, protocols, { maxPayload: MAX_PAYLOAD }),
      stompVersions: versions,
      connectHeaders: cmd.connectHeaders ?? {},
      heartbeatIncoming: cmd.heartbeatIncoming ?? 0,
      heartbeatOutgoing: cmd.heartbeatOutgoing ?? 0,
      heartbeatToleranceMultiplier: cmd.heartbeatToleranceMultiplier ?? 2,
      forceBinaryWSFrames: cmd.forceBinaryWSFrames ?? false,
      splitLargeFrames: cmd.splitLargeFrames ?? false,
      maxWebSocketChunkSize: cmd.maxWebSocketChunkSize ?? 8 * 1024,
      reconnectDelay: 0, // tests decide when to reconnect
      debug: cmd.debug ? (message) => emit({ event: 'debug', message }) : () => {},
      onConnect: (frame) => {
        emit({ event: 'connected', headers: { ...frame.headers }, version: frame.headers.version });
      },
      onStompError: (frame) => emit(frameEvent('error', frame)),
      onUnhandledMessage: onMessage,
      onUnhandledReceipt: (frame) => emit({ event: 'receipt', headers: { ...frame.headers } }),
      onUnhandledFrame: (frame) => emit(frameEvent('unhandled-frame', frame)),
      onDisconnect: (frame) => {
        emit({ event: 'receipt', headers: { ...frame.headers } });
        emit({ event: 'disconnected', headers: { ...frame.headers } });
      },
      onHeartbeatReceived: () => emit({ event: 'heartbeat-received' }),
      onHeartbeatLost: () => emit({ event: 'heartbeat-lost' }),
      onWebSocketClose: (evt) => {
        emit({ event: 'ws-close', code: evt.code, reason: String(evt.reason ?? ''), wasClean: evt.wasClean });
      },
      onWebSocketError: (evt) => emit({ event: 'ws-error', message: String(evt?.message ?? evt) }),
      beforeConnect: () => {},
    });
    client.activate();
    // The socket exists once activate() has run its (async) beforeConnect: report open.
    const watch = setInterval(() => {
      const ws = client?.webSocket;
      if (ws === undefined) return;
      clearInterval(watch);
      if (ws.readyState === WebSocket.OPEN) {
        emit({ event: 'ws-open', protocol: ws.protocol });
      } else {
        ws.addEventListener('open', () => emit({ event: 'ws-open', protocol: ws.protocol }));
      }
    }, 1);
  },

  subscribe(cmd) {
    const headers = { ...(cmd.headers ?? {}) };
    if (cmd.id !== undefined) headers.id = cmd.id;
    const sub = requireClient().subscribe(cmd.destination, onMessage, headers);
    return { id: sub.id };
  },

  unsubscribe(cmd) {
    requireClient().unsubscribe(cmd.id, cmd.headers ?? {});
  },

  send(cmd) {
    const params = { destination: cmd.destination, headers: cmd.headers ?? {} };
    if (cmd.binaryBody !== undefined && cmd.binaryBody !== null) {
      params.binaryBody = new Uint8Array(Buffer.from(cmd.binaryBody, 'base64'));
    } else {
      params.body = cmd.body ?? '';
    }
    if (cmd.skipContentLengthHeader) params.skipContentLengthHeader = true;
    requireClient().publish(params);
  },

  ack(cmd) {
    if (cmd.ref !== undefined) {
      takeMessage(cmd.ref).ack(cmd.headers ?? {});
    } else {
      requireClient().ack(cmd.messageId, cmd.subscription, cmd.headers ?? {});
    }
  },

  nack(cmd) {
    if (cmd.ref !== undefined) {
      takeMessage(cmd.ref).nack(cmd.headers ?? {});
    } else {
      requireClient().nack(cmd.messageId, cmd.subscription, cmd.headers ?? {});
    }
  },

  begin(cmd) {
    const tx = requireClient().begin(cmd.transaction);
    return { transaction: tx.id };
  },

  commit(cmd) {
    requireClient().commit(cmd.transaction);
  },

  abort(cmd) {
    requireClient().abort(cmd.transaction);
  },

  async disconnect(cmd) {
    const c = requireClient();
    if (cmd.headers) c.disconnectHeaders = cmd.headers;
    await c.deactivate();
  },

  'force-close'() {
    const ws = requireClient().webSocket;
    if (ws) ws.close();
  },

  silence() {
    // No public API stops the pinger; a hung client is what we want to look like.
    const handler = requireClient()._stompHandler;
    if (handler?._pinger) {
      handler._pinger.stop();
      handler._pinger = undefined;
    }
  },

  raw(cmd) {
    const ws = requireClient().webSocket;
    if (!ws || ws.readyState !== WebSocket.OPEN) {
      throw new Error('WebSocket is not open');
    }
    if (cmd.base64 !== undefined) {
      ws.send(Buffer.from(cmd.base64, 'base64'), { binary: true });
    } else {
      ws.send(String(cmd.data), { binary: false });
    }
  },

  async exit() {
    if (client !== null) {
      await Promise.race([client.deactivate({ force: true }), new Promise((r) => setTimeout(r, 1000))]);
    }
    process.exit(0);
  },
};

// Commands run one after the other, in the order they arrived.
let queue = Promise.resolve();

const rl = createInterface({ input: process.stdin, crlfDelay: Infinity });
rl.on('line', (line) => {
  if (!line.trim()) return;
  queue = queue.then(async () => {
    let cmd;
    try {
      cmd = JSON.parse(line);
    } catch (err) {
      emit({ event: 'cmd-failed', seq: null, message: `bad JSON: ${err.message}` });
      return;
    }
    const handler = handlers[cmd.cmd];
    try {
      if (handler === undefined) throw new Error(`unknown command ${JSON.stringify(cmd.cmd)}`);
      const result = await handler(cmd);
      emit({ event: 'cmd-done', seq: cmd.seq ?? null, cmd: cmd.cmd, ...(result ?? {}) });
    } catch (err) {
      emit({ event: 'cmd-failed', seq: cmd.seq ?? null, cmd: cmd.cmd, message: String(err?.message ?? err) });
    }
  });
});
rl.on('close', () => {
  queue.then(() => handlers.exit());
});

process.on('uncaughtException', (err) => {
  emit({ event: 'driver-error', message: String(err?.stack ?? err) });
});

emit({ event: 'ready', stompjs: '7', node: process.version });
