import { listAll, type Host, type Network } from "../api";
import { useSession } from "../session";
import { href } from "../route";
import { CardTable, ErrorBox, Listing, Time, useLoaded } from "../ui";

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
          {(
            [
              ["IPv4", n.ipv4_cidr],
              ["IPv6", n.ipv6_cidr],
              ["WireGuard port", n.listen_port],
              ["MTU", n.mtu],
              ["Id", <code>{n.id}</code>],
            ] as const
          ).map(([term, value]) => (
            <div key={term}>
              <dt>{term}</dt>
              <dd>{value}</dd>
            </div>
          ))}
        </dl>
      )}
      <h2 id="hosts-title">Hosts</h2>
      <p className="hint" aria-live="polite">
        {hosts.data && `${online} of ${hosts.data.length} online. `}
        Refreshed every {REFRESH_MS / 1000} s{hosts.updatedAt && <>; last at {hosts.updatedAt.toLocaleTimeString()}</>}.
      </p>
      <Listing
        loaded={hosts}
        noun="hosts"
        empty={
          <p>
            No hosts in this network yet. Create an <a href={href({ page: "keys" })}>enrollment key</a> and run{" "}
            <code>skymesh-agent join --server {window.location.origin} --token TOKEN</code> on a host.
          </p>
        }
      >
        {(items) => (
          <CardTable caption="Hosts" columns={["Host", "Status", "Last seen", "Addresses", "Endpoints", "Agent"]}>
            {items.map((h) => {
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
          </CardTable>
        )}
      </Listing>
    </section>
  );
}
