/* The dashboard's hash routes, as links and parsed back. Pure: reads no location itself.
 *
 *   #/                   resolutions list
 *   #/resolutions/ID     a resolution: its graph of runs, its Actions
 *   #/runs/ID            the same, with the Run panel of run ID open
 */

const enc = encodeURIComponent;
const dec = (s) => {
  try {
    return decodeURIComponent(s);
  } catch {
    return s; // a malformed %-escape: use it as it is
  }
};

export const runHref = (id) => `#/runs/${enc(id)}`;
export const resHref = (id) => `#/resolutions/${enc(id)}`;

/** {name: "list"} | {name: "resolution", id} | {name: "run", id} from a location hash. */
export function parseRoute(hash) {
  const parts = String(hash || "").replace(/^#\/?/, "").split("/").filter(Boolean).map(dec);
  if (parts[0] === "resolutions" && parts[1]) return { name: "resolution", id: parts[1] };
  if (parts[0] === "runs" && parts[1]) return { name: "run", id: parts[1] };
  return { name: "list" };
}
