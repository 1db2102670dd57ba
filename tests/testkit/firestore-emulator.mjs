// Runs the Firestore emulator of the npm package @firestore-emulator/server for tests.
//
//   node tests/testkit/firestore-emulator.mjs PORT      (or FIRESTORE_EMULATOR_PORT=PORT)
//
// It serves the Firestore v1 gRPC API on 127.0.0.1:PORT, in memory, and prints
// "firestore-emulator: listening on 127.0.0.1:PORT (pid PID)" on stdout once it accepts calls.
// If it cannot bind the port it prints the reason on stderr (EADDRINUSE when the port is
// taken) and exits with status 1. It exits with status 0 on SIGTERM, SIGINT, or when its
// standard input reaches end of file: the test harness (mesh-testkit's FirestoreEmulator)
// holds a pipe to it, so the emulator never outlives the test process, even one killed with
// SIGKILL. Run it by hand with stdin left open (a terminal), not from `</dev/null`.
//
// The package is partial: commits, batch gets, queries and listeners work; the single-document
// RPCs (GetDocument, CreateDocument, UpdateDocument, DeleteDocument, ListDocuments) do not.

import { createRequire } from "node:module";

const HOST = "127.0.0.1";

const port = parsePort(process.argv[2] ?? process.env.FIRESTORE_EMULATOR_PORT);

// The package's FirestoreServer binds 0.0.0.0; this binds its gRPC server on loopback only,
// with ServerCredentials taken from the copy of @grpc/grpc-js that the package itself loads
// (grpc-js checks the credentials' class).
const require = createRequire(import.meta.url);
const emulatorEntry = require.resolve("@firestore-emulator/server");
const { FirestoreServer } = require(emulatorEntry);
const { ServerCredentials } = createRequire(emulatorEntry)("@grpc/grpc-js");

const emulator = new FirestoreServer();
// `server` is private in the package's TypeScript, not at run time; the version is pinned in
// the repository's package.json.
const grpcServer = emulator.server;
if (typeof grpcServer?.bindAsync !== "function") {
  fail("@firestore-emulator/server has no gRPC server at .server: was the pinned version changed?");
}

let stopping = false;
function stop(reason) {
  if (stopping) return;
  stopping = true;
  console.log(`firestore-emulator: stopping (${reason})`);
  grpcServer.forceShutdown();
  process.exit(0);
}
process.on("SIGTERM", () => stop("SIGTERM"));
process.on("SIGINT", () => stop("SIGINT"));
process.stdin.on("end", () => stop("stdin closed"));
process.stdin.on("close", () => stop("stdin closed"));
process.stdin.on("error", (error) => stop(`stdin error: ${error.message}`));
// read (and ignore) whatever arrives, so that end of file is noticed
process.stdin.resume();

grpcServer.bindAsync(`${HOST}:${port}`, ServerCredentials.createInsecure(), (error) => {
  if (error) fail(`cannot bind ${HOST}:${port}: ${error.message}`);
  if (stopping) return;
  console.log(`firestore-emulator: listening on ${HOST}:${port} (pid ${process.pid})`);
});

function parsePort(text) {
  const port = Number(text);
  if (!Number.isInteger(port) || port < 1 || port > 65535) {
    fail(`expected a port (1-65535) as the first argument or in FIRESTORE_EMULATOR_PORT, got ${JSON.stringify(text ?? null)}`);
  }
  return port;
}

function fail(message) {
  console.error(`firestore-emulator: ${message}`);
  process.exit(1);
}
