// The exposed tool namespace: one name per tool across all upstreams, never two tools behind one name, no name
// inside a namespace served by another upstream, and no display title that poses as another tool. (A context token
// minted for one upstream passes at no other because no two upstreams share an audience: config.ts.)
import type { Tool } from '@modelcontextprotocol/sdk/types.js';
import type { Logger } from 'pino';
import { SidecarError } from '../errors.ts';

/**
 * Names a tool may have: what the MCP spec recommends (1 to 128 of A-Z a-z 0-9 _ - .). Anything else is refused,
 * so an invisible or look-alike character cannot pass one tool off as another in the agent's list.
 */
export const TOOL_NAME = /^[A-Za-z0-9_.-]{1,128}$/;

/**
 * What a reader cannot see, or what changes how the rest reads: controls, format characters (zero-width, bidi
 * overrides, soft hyphen), line and paragraph separators, private-use, unassigned and surrogate code points, and
 * the rest of Unicode's default-ignorables (Hangul fillers, variation selectors). A title with any of them is dropped.
 */
const HIDDEN = /[\p{Cc}\p{Cf}\p{Zl}\p{Zp}\p{Co}\p{Cn}\p{Cs}\p{Default_Ignorable_Code_Point}]/u;

export interface UpstreamRef {
  readonly name: string;
  readonly namespace?: string | undefined;
}

export interface CatalogEntry<U extends UpstreamRef = UpstreamRef> {
  /** The name the agent and the policy see: `<namespace>.<tool>` or the upstream's own name. */
  readonly exposed: string;
  readonly upstream: U;
  /** The upstream's own name for the tool: what is forwarded and what the context token names. */
  readonly upstreamTool: string;
  /**
   * The definition as the agent sees it: the upstream's, with `name` set to `exposed` and without a `title` or
   * `annotations.title` that hides characters or names another tool.
   */
  readonly definition: Readonly<Tool>;
}

export type Catalog<U extends UpstreamRef = UpstreamRef> = ReadonlyMap<string, CatalogEntry<U>>;

/**
 * Builds the catalog, or throws SIDECAR_ERR_CONFIG_INVALID naming the upstreams of the first collision:
 * - two tools behind one exposed name (the agent and the policy could not tell them apart);
 * - an upstream without a namespace offering a dotted name whose first part is another upstream's namespace
 *   (`crm.delete_user` beside `namespace: crm`): a rule written for the crm's tool would send the call, arguments
 *   and all, to that upstream, whatever the crm lists today. So an exposed name splits one way only.
 * Titles that pose as another tool are dropped from the definitions, with a warning for the operator.
 */
export function buildCatalog<U extends UpstreamRef>(
  lists: readonly { readonly upstream: U; readonly tools: readonly Tool[] }[],
  logger?: Pick<Logger, 'warn'>,
): Catalog<U> {
  const namespaces = new Map<string, U>();
  for (const { upstream } of lists) {
    if (upstream.namespace !== undefined) namespaces.set(upstream.namespace, upstream);
  }
  const offered = new Map<string, { readonly upstream: U; readonly tool: Tool }>();
  for (const { upstream, tools } of lists) {
    for (const tool of tools) {
      if (!TOOL_NAME.test(tool.name)) {
        throw new SidecarError(
          'SIDECAR_ERR_CONFIG_INVALID',
          `upstream "${upstream.name}" offers a tool named ${visible(tool.name)}: tool names must match ${TOOL_NAME.source}`,
        );
      }
      const exposed = upstream.namespace === undefined ? tool.name : `${upstream.namespace}.${tool.name}`;
      const dot = tool.name.indexOf('.');
      const owner = upstream.namespace === undefined ? namespaces.get(tool.name.slice(0, dot)) : undefined;
      if (dot > 0 && owner !== undefined) {
        throw new SidecarError(
          'SIDECAR_ERR_CONFIG_INVALID',
          `tool name collision on "${exposed}": upstream "${upstream.name}" has no namespace but offers a name in namespace "${owner.namespace}" of upstream "${owner.name}"; give "${upstream.name}" a \`namespace\``,
        );
      }
      const existing = offered.get(exposed)?.upstream;
      if (existing === upstream) {
        throw new SidecarError(
          'SIDECAR_ERR_CONFIG_INVALID',
          `tool name collision on "${exposed}": upstream "${upstream.name}" lists it twice`,
        );
      }
      if (existing !== undefined) {
        throw new SidecarError(
          'SIDECAR_ERR_CONFIG_INVALID',
          `tool name collision on "${exposed}": upstreams "${existing.name}" and "${upstream.name}" both offer it; give one of them a \`namespace\``,
        );
      }
      offered.set(exposed, { upstream, tool });
    }
  }
  /** Exposed names by the form a title is compared in (fold). */
  const names = new Map<string, string[]>();
  for (const exposed of offered.keys()) {
    const key = fold(exposed);
    names.set(key, [...(names.get(key) ?? []), exposed]);
  }
  const catalog = new Map<string, CatalogEntry<U>>();
  for (const [exposed, { upstream, tool }] of offered) {
    /** Whether the agent may see this title; if not, the operator is told why. */
    const shows = (field: string, title: string | undefined): boolean => {
      if (title === undefined) return true;
      const reason = HIDDEN.test(title)
        ? 'hidden or control characters'
        : names.get(fold(title))?.some((n) => n !== exposed)
          ? 'the name of another tool'
          : undefined;
      if (reason === undefined) return true;
      logger?.warn(
        { upstream: upstream.name, tool: tool.name, field, title: visible(title), reason },
        'tool title dropped: it could pass the tool off as another',
      );
      return false;
    };
    // Only a title goes: the description and the schemas reach the agent as the upstream wrote them.
    const definition: Tool = { ...tool, name: exposed };
    if (!shows('title', tool.title)) delete definition.title;
    if (tool.annotations !== undefined && !shows('annotations.title', tool.annotations.title)) {
      const { title: _dropped, ...kept } = tool.annotations;
      definition.annotations = kept;
    }
    catalog.set(
      exposed,
      Object.freeze({ exposed, upstream, upstreamTool: tool.name, definition: Object.freeze(definition) }),
    );
  }
  return catalog;
}

/** A name or title as it is compared with exposed names: compatibility forms, case and outer spaces folded. */
function fold(s: string): string {
  return s.normalize('NFKC').trim().toLowerCase();
}

/** A quoted name with everything outside printable ASCII escaped, so the operator sees what is hidden in it. */
function visible(name: string): string {
  return JSON.stringify(name).replace(
    /[^\x20-\x7e]/g,
    (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`,
  );
}
