import { listAll, type Host, type Network } from "../api";
import { useSession } from "../session";
import { href } from "../route";
import { ErrorBox, Time, useLoaded } from "../ui";

/** How often the hosts are fetched again while the page is open. */
export const REFRESH_MS = 3000;

export function NetworkPage({ id }: { id: string }) {
  const { api } = useSession();
  const network = useLoaded(() => api<Network>("GET", `/v1/networks/${encodeURIComponent(id)}`), [api, id]);
  // Every host with an address in this network, as the API lists them (no status computed here).
  const hosts = useLoaded(
    async () =>
      (await listAll<Host>(api, "/v1/hosts", "hosts")).filter((h) => h.addresses.some((a) => a.network_id === id)),
    [api, id],
    REFRESH_MS,
  );
  const n = network.data;
  const online = hosts.data?.filter((h) => h.status.online).length ?? 0;

  return (
    <section aria-labelledby="network-title">
      <p>
        <a href={href({ page: "networks" })}>← All networks</a>
      </p>
      <h1 id="network-title">{n ? n.name : "Network"}</h1>
      <ErrorBox error={network.error} onRetry={network.reload} />
      {n && (
        <dl className="facts">
          <div>
            <dt>IPv4</dt>
            <dd>{n.ipv4_cidr}</dd>
          </div>
          <div>
            <dt>IPv6</dt>
            <dd>{n.ipv6_cidr}</dd>
          </div>
          <div>
            <dt>WireGuard port</dt>
            <dd>{n.listen_port}</dd>
          </div>
          <div>
            <dt>MTU</dt>
            <dd>{n.mtu}</dd>
          </div>
          <div>
            <dt>Id</dt>
            <dd>
              <code>{n.id}</code>
            </dd>
          </div>
        </dl>
      )}
      <h2 id="hosts-title">Hosts</h2>
      <p className="hint" aria-live="polite">
        {hosts.data && `${online} of ${hosts.data.length} online. `}
        Refreshed every {REFRESH_MS / 1000} s{hosts.updatedAt && <>; last at {hosts.updatedAt.toLocaleTimeString()}</>}.
      </p>
      <ErrorBox
        error={hosts.error && (hosts.data ? `Showing the hosts as they were at the last refresh. ${hosts.error}` : hosts.error)}
        onRetry={hosts.reload}
      />
      {hosts.data === null && !hosts.error && <p aria-busy="true">Loading hosts…</p>}
      {hosts.data?.length === 0 && (
        <p>
          No hosts in this network yet. Create an <a href={href({ page: "keys" })}>enrollment key</a> and run{" "}
          <code>skymesh-agent join --server URL --token TOKEN</code> on a host.
        </p>
      )}
      {hosts.data && hosts.data.length > 0 && (
        <table className="cards" aria-labelledby="hosts-title">
          <thead>
            <tr>
              <th scope="col">Host</th>
              <th scope="col">Status</th>
              <th scope="col">Last seen</th>
              <th scope="col">Addresses</th>
              <th scope="col">Endpoints</th>
              <th scope="col">Agent</th>
            </tr>
          </thead>
          <tbody>
            {hosts.data.map((h) => {
              const addr = h.addresses.find((a) => a.network_id === id);
              const endpoints = [...new Set([...h.status.reported_endpoints, ...h.endpoints])];
              return (
                <tr key={h.id} data-host={h.name}>
                  <th scope="row" data-label="Host">
                    {h.name}
                  </th>
                  <td data-label="Status">
                    <span className={h.status.online ? "badge online" : "badge offline"}>
                      {h.status.online ? "Online" : "Offline"}
                    </span>
                  </td>
                  <td data-label="Last seen">
                    <Time iso={h.status.last_seen} />
                  </td>
                  <td data-label="Addresses">
                    {addr ? (
                      <>
                        {addr.ipv4}
                        <br />
                        {addr.ipv6}
                      </>
                    ) : (
                      "—"
                    )}
                  </td>
                  <td data-label="Endpoints">
                    {endpoints.length ? endpoints.join(", ") : "none reported"}
                    {h.observed_endpoint && (
                      <>
                        <br />
                        <span className="hint">seen from {h.observed_endpoint}</span>
                      </>
                    )}
                  </td>
                  <td data-label="Agent">{h.status.agent_version ?? "—"}</td>
                </tr>
              );
            })}
          </tbody>
        </table>
      )}
    </section>
  );
}
