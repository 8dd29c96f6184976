// PII detection, reversible scrubbing and restoration. The API is described in README.md in this folder.
export { createPiiEngine, resolveOverlaps, type PiiEngine } from "./engine";
export {
  CANONICAL_PLACEHOLDER_RE,
  PLACEHOLDER_RE,
  SECRET_MARKER,
  PlaceholderMap,
  canonicalMaps,
  canonicalPlaceholder,
  redactionMarker,
  type CanonicalMaps,
  type PiiSession,
  type Restorer,
  type RestoreOptions,
  type StreamRestorer,
} from "./session";
export {
  PII_ENTITIES,
  PATTERN_ENTITIES,
  type NamesMode,
  type PiiCounts,
  type PiiEntity,
  type PiiOptions,
  type Span,
} from "./types";
export {
  createChunkRestorer,
  restoreChatCompletion,
  restoreChunkList,
  restoreChunkStream,
  scrubArguments,
  scrubChatRequest,
  scrubEmbeddingInput,
  type ChunkRestorer,
  type StreamOrder,
} from "./chat";
