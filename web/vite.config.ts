import { defineConfig } from "vite";
import react from "@vitejs/plugin-react";

// base "./": the built files refer to each other relatively, so the dashboard works from
// whatever path serves it (the local API server at "/", later a CDN or an API stage path).
// `npm run dev` forwards /v1 to a local stack (`make up`), keeping one origin as in production.
export default defineConfig({
  base: "./",
  plugins: [react()],
  build: { outDir: "dist", emptyOutDir: true, sourcemap: false },
  server: { proxy: { "/v1": process.env.SKYMESH_API ?? "http://127.0.0.1:8787" } },
});
