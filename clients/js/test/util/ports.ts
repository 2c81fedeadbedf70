import { createServer } from "node:net";

/** Returns a loopback port that nothing listens on, by binding one and closing it. */
export async function unusedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const address = server.address();
  await new Promise<void>((resolve) => server.close(() => resolve()));
  if (address === null || typeof address === "string") {
    throw new Error("the server has no TCP address");
  }
  return address.port;
}
