import { useEffect, useState } from "react";

// Pages are addressed in the URL fragment (#/networks/ID), so any static host serves the
// dashboard without rewrite rules. Only ids go in it, never a key or token.
export type Route =
  | { page: "networks" }
  | { page: "network"; id: string }
  | { page: "keys" };

export function parse(hash: string): Route {
  const parts = hash.replace(/^#\/?/, "").split("/").filter(Boolean).map(decodeURIComponent);
  if (parts[0] === "networks" && parts[1]) return { page: "network", id: parts[1] };
  if (parts[0] === "keys") return { page: "keys" };
  return { page: "networks" };
}

export function href(route: Route): string {
  switch (route.page) {
    case "network":
      return `#/networks/${encodeURIComponent(route.id)}`;
    case "keys":
      return "#/keys";
    default:
      return "#/networks";
  }
}

export function useRoute(): Route {
  const [route, setRoute] = useState(() => parse(window.location.hash));
  useEffect(() => {
    const on = () => setRoute(parse(window.location.hash));
    window.addEventListener("hashchange", on);
    return () => window.removeEventListener("hashchange", on);
  }, []);
  return route;
}
