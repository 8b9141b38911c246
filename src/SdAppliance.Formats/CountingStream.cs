namespace SdAppliance.Formats;

/// <summary>
/// What a writer hands to code that fills part of its file (a tensor's data callback, a zip entry):
/// write-only, no seeking, counts what it is given, and leaves the file open when disposed, so that
/// code cannot corrupt the layout or close the file early. <see cref="OnWrite"/> sees every byte.
/// </summary>
internal class CountingStream(Stream inner) : Stream
{
    public long Written { get; private set; }

    public override bool CanRead => false;
    public override bool CanSeek => false;
    public override bool CanWrite => true;
    public override long Length => throw new NotSupportedException();
    public override long Position
    {
        get => throw new NotSupportedException();
        set => throw new NotSupportedException();
    }

    public override void Write(byte[] buffer, int offset, int count) => Write(buffer.AsSpan(offset, count));

    public override void Write(ReadOnlySpan<byte> buffer)
    {
        inner.Write(buffer);
        OnWrite(buffer);
        Written += buffer.Length;
    }

    public override void WriteByte(byte value) => Write([value]);

    public override void Flush()
    {
    }

    public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException();
    public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
    public override void SetLength(long value) => throw new NotSupportedException();

    /// <summary>Called with each piece after it is written (a checksum, say).</summary>
    protected virtual void OnWrite(ReadOnlySpan<byte> buffer)
    {
    }
}
