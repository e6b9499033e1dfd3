import { type Host, type LatencyRow } from "../api";
import { useSession } from "../session";
import { ErrorBox, REFRESH_MS, useLoaded } from "../ui";

/** A cell's shade by round-trip time: also said in words, so colour is never the only cue. */
function shade(row: LatencyRow): string {
  if (!row.up) return "lat-down";
  if (row.rtt_ms === null) return "lat-none";
  if (row.rtt_ms < 20) return "lat-fast";
  if (row.rtt_ms < 80) return "lat-ok";
  if (row.rtt_ms < 200) return "lat-slow";
  return "lat-bad";
}

function says(row: LatencyRow): string {
  if (!row.up) return row.loss_pct ? `down (${row.loss_pct}% lost)` : "down";
  if (row.rtt_ms === null) return "no reply yet";
  return `${row.rtt_ms.toFixed(1)} ms${row.loss_pct ? `, ${row.loss_pct}% lost` : ""}`;
}

/**
 * The latency matrix as the API reports it (each member's prober, through the tunnel): one row per
 * host that probed, one column per host it probed; an empty cell was not probed.
 */
export function LatencyMap({ networkId, hosts }: { networkId: string; hosts: Host[] }) {
  const { api } = useSession();
  const matrix = useLoaded(
    async () => (await api<{ rows: LatencyRow[] }>("GET", `/v1/networks/${encodeURIComponent(networkId)}/latency`)).rows,
    [api, networkId],
    REFRESH_MS,
  );
  const name = new Map(hosts.map((h) => [h.id, h.name]));
  const rows = matrix.data ?? [];
  const label = (id: string) => name.get(id) ?? id;
  const byName = (ids: string[]) => [...new Set(ids)].sort((a, b) => label(a).localeCompare(label(b)));
  const sources = byName(rows.map((r) => r.from));
  const targets = byName(rows.map((r) => r.to));
  const cell = new Map(rows.map((r) => [`${r.from} ${r.to}`, r]));

  return (
    <>
      <h2 id="latency-title">Latency</h2>
      <p className="hint">
        Round-trip times each host measured through the tunnel to the hosts it depends on (gateways, relays, peers
        without a direct path), from their latest reports.
      </p>
      <ErrorBox error={matrix.error} onRetry={matrix.reload} />
      {matrix.data?.length === 0 && <p>No measurements yet: hosts probe the gateways and relays they use.</p>}
      {rows.length > 0 && (
        <div className="scroll" role="region" aria-labelledby="latency-title" tabIndex={0}>
          <table className="heat">
            <caption className="sr-only">Latency: rows are the hosts that probed, columns the hosts they probed</caption>
            <thead>
              <tr>
                <th scope="col">From ↓ / to →</th>
                {targets.map((t) => (
                  <th scope="col" key={t}>
                    {label(t)}
                  </th>
                ))}
              </tr>
            </thead>
            <tbody>
              {sources.map((s) => (
                <tr key={s}>
                  <th scope="row">{label(s)}</th>
                  {targets.map((t) => {
                    const r = cell.get(`${s} ${t}`);
                    return r ? (
                      <td key={t} className={shade(r)} data-from={label(s)} data-to={label(t)} title={`measured ${r.age_s} s ago`}>
                        {says(r)}
                      </td>
                    ) : (
                      <td key={t} className="lat-none" data-from={label(s)} data-to={label(t)}>
                        <span className="sr-only">not probed</span>
                      </td>
                    );
                  })}
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
    </>
  );
}
