// Runs the client guide's browser snippet under node, unchanged (tests/policies/test_guide_live.py).
// The snippet asks its own backend with fetch("/your-backend/gemini-token"): here that answers
// GUIDE_BACKEND_STATUS with the JSON body GUIDE_BACKEND_BODY, as the tenant's endpoint would
// pass on Ephemera's answer. Everything else is real: @google/genai opens the Live session,
// to wherever GOOGLE_GEMINI_BASE_URL (the SDK's own setting) points.
import { pathToFileURL } from "node:url";

const status = Number(process.env.GUIDE_BACKEND_STATUS);
const body = process.env.GUIDE_BACKEND_BODY;

globalThis.fetch = async (url) => {
  if (!String(url).startsWith("/your-backend/")) throw new Error(`unexpected fetch ${url}`);
  return new Response(body, { status, headers: { "Content-Type": "application/json" } });
};

await import(pathToFileURL(process.argv[2]).href);
