// An OpenClaw plugin that runs synthesis-bridge as a background service of the gateway: started with the
// gateway (once the bridge says it is ready), stopped with it. Plain ESM, no build step and no dependencies;
// OpenClaw's plugin loader provides its SDK. The model provider itself is an ordinary
// `models.providers.<id>` entry pointing at the bridge (see the project's README).
import { spawn } from "node:child_process";
import { definePluginEntry } from "openclaw/plugin-sdk/plugin-entry";

// What the bridge prints on standard error once it accepts requests.
const READY_LINE = "bridge ready:";

export default definePluginEntry({
  id: "synthesis-bridge",
  name: "synthesis-bridge",
  description: "Runs synthesis-bridge as a background service of the OpenClaw gateway",
  register(api) {
    let bridge;
    let stopAfter;
    api.registerService({
      id: "synthesis-bridge",
      // Awaited at gateway start-up; OpenClaw sets no limit of its own on a first start.
      async start(ctx) {
        const {
          command,
          args = [],
          env = {},
          readyTimeoutMs = 30_000,
          // The bridge finishes open turns for up to its --shutdown-grace (10 s by default) before it exits.
          stopTimeoutMs = 20_000,
        } = api.pluginConfig ?? {};
        stopAfter = stopTimeoutMs;
        const child = spawn(command, args, {
          env: { ...process.env, ...env },
          stdio: ["ignore", "inherit", "pipe"],
        });
        bridge = child;
        const ready = new Promise((resolve, reject) => {
          let seen = "";
          const timer = setTimeout(
            () => reject(new Error(`synthesis-bridge not ready after ${readyTimeoutMs} ms`)),
            readyTimeoutMs,
          );
          // The bridge logs to standard error for its whole life: pass it on to the gateway's.
          child.stderr.on("data", (chunk) => {
            process.stderr.write(chunk);
            if (seen !== null && (seen += chunk).includes(READY_LINE)) {
              seen = null;
              clearTimeout(timer);
              resolve();
            }
          });
          child.once("error", (err) => {
            clearTimeout(timer);
            reject(err);
          });
          child.once("exit", (code, signal) => {
            clearTimeout(timer);
            reject(new Error(`synthesis-bridge exited before it was ready (code ${code}, signal ${signal})`));
          });
        });
        try {
          await ready;
        } catch (err) {
          // Not left for stop(): OpenClaw waits only 5 s for that after a failed start.
          bridge = undefined;
          child.kill("SIGKILL");
          throw err;
        }
        child.once("exit", (code, signal) => {
          if (bridge === child) ctx.logger.warn(`synthesis-bridge exited (code ${code}, signal ${signal})`);
        });
        ctx.logger.info(`synthesis-bridge started (pid ${child.pid})`);
      },
      // Awaited when the gateway stops (SIGTERM, SIGINT) or reloads the plugin, and after a failed start.
      async stop(ctx) {
        const child = bridge;
        bridge = undefined;
        if (!child || child.exitCode !== null || child.signalCode !== null) return;
        const exited = new Promise((resolve) => child.once("exit", resolve));
        child.kill("SIGTERM");
        const timer = setTimeout(() => child.kill("SIGKILL"), stopAfter);
        await exited;
        clearTimeout(timer);
        ctx.logger.info("synthesis-bridge stopped");
      },
    });
  },
});
