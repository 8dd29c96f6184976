/**
 * A client that leaves mid-stream: POSTs a streaming request, reads the body until `marker` shows up, then aborts.
 * Resolves with the text read so far.
 */
export async function leaveStreamAfter(
  url: string,
  request: { headers: Record<string, string>; body: unknown },
  marker: string,
): Promise<string> {
  const abort = new AbortController();
  const res = await fetch(url, {
    method: "POST",
    headers: { "content-type": "application/json", ...request.headers },
    body: JSON.stringify(request.body),
    signal: abort.signal,
  });
  const reader = res.body!.getReader();
  const decoder = new TextDecoder();
  let text = "";
  while (!text.includes(marker)) {
    const { value, done } = await reader.read();
    if (done) throw new Error(`the stream ended before "${marker}": ${text}`);
    text += decoder.decode(value, { stream: true });
  }
  abort.abort();
  await reader.cancel().catch(() => undefined);
  return text;
}
