import { defineConfig } from "vite";

// `npm run dev` serves the studio with hot reload and forwards the API (and the
// live websocket) to a Runstream started with `scripts/up` on the default port.
const api = process.env.RUNSTREAM_API ?? "http://127.0.0.1:8555";

export default defineConfig({
  base: "/",
  build: {
    outDir: "../runstream/studio/dist",
    emptyOutDir: true,
    assetsDir: "assets",
    target: "es2022",
    sourcemap: true,
    chunkSizeWarningLimit: 300,
  },
  server: {
    proxy: {
      "/api": { target: api, ws: true, changeOrigin: true },
    },
  },
});
