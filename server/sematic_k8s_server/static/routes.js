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

/** What run and resolution ids look like (lowercase hex). */
export const ID = /^[0-9a-f]{1,64}$/;

/** {name: "list"} | {name: "resolution", id} | {name: "run", id} | {name: "bad", what, id} (an id that
 * cannot be one) | {name: "unknown", path} from a location hash. */
export function parseRoute(hash) {
  const parts = String(hash || "").replace(/^#\/?/, "").split("/").filter(Boolean).map(dec);
  const kinds = { resolutions: "resolution", runs: "run" };
  if (kinds[parts[0]] && parts[1]) {
    const id = parts[1];
    return ID.test(id) ? { name: kinds[parts[0]], id } : { name: "bad", what: kinds[parts[0]], id };
  }
  if (!parts.length) return { name: "list" };
  return { name: "unknown", path: parts.join("/") };
}
