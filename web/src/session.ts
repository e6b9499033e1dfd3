import { createContext, useContext } from "react";
import { ApiError, call, type Caller } from "./api";

// The signed-in session: the admin key lives only in React state (memory). It is never
// written to a URL, localStorage, sessionStorage or a cookie; reloading the page or
// signing out forgets it.
export type Session = {
  /** A call with the session's key; a 401 signs out with the API's reason. */
  api: Caller;
  signOut: (reason?: string) => void;
};

export const SessionContext = createContext<Session | null>(null);

export function useSession(): Session {
  const s = useContext(SessionContext);
  if (!s) throw new Error("useSession outside a signed-in page");
  return s;
}

export function makeSession(key: string, signOut: (reason?: string) => void): Session {
  return {
    signOut,
    api: async <T,>(method: string, path: string, body?: unknown): Promise<T> => {
      try {
        return await call<T>(key, method, path, body);
      } catch (e) {
        if (e instanceof ApiError && e.status === 401) {
          signOut(`You were signed out: the API no longer accepts this admin key (${e.message}). Sign in with a current key.`);
        }
        throw e;
      }
    },
  };
}

/** A message for anything a call threw. */
export function describe(e: unknown): string {
  if (e instanceof ApiError) return e.message;
  return `Something went wrong in the page: ${String(e)}. Reload the page and try again.`;
}
