// PII detection, reversible scrubbing and restoration. The API is described in README.md in this folder.
export { createPiiEngine, resolveOverlaps, type PiiEngine } from "./engine";
export {
  PLACEHOLDER_RE,
  SECRET_MARKER,
  redactionMarker,
  type PiiSession,
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
  scrubArguments,
  scrubChatRequest,
  scrubEmbeddingInput,
  type ChunkRestorer,
} from "./chat";
