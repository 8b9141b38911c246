using System.Text;
using static SdAppliance.Torch.Native.LibSdTorch;

namespace SdAppliance.Torch.Distributed;

/// <summary>
/// c10d's TCPStore, the rendezvous of a process group (<c>torch.distributed.TCPStore</c>): the main process hosts it on
/// host:port, every rank connects, and they exchange small values by key. Every wait is bounded by the timeout.
/// </summary>
public sealed class TcpStore : IDisposable
{
    private IntPtr handle;

    private TcpStore(IntPtr handle, string host, int worldSize, TimeSpan timeout, bool isServer)
    {
        this.handle = CheckHandle(handle);
        HostName = host;
        WorldSize = worldSize;
        Timeout = timeout;
        IsServer = isServer;
        Port = Check(sdt_store_port(this.handle));
    }

    ~TcpStore() => Free();

    /// <summary>Hosts the store on <paramref name="host"/>:<paramref name="port"/> (0: a free port, then read <see cref="Port"/>).</summary>
    public static TcpStore Host(string host, int port, int worldSize, TimeSpan timeout) =>
        new(sdt_tcp_store_new(host, port, worldSize, 1, (long)timeout.TotalMilliseconds), host, worldSize, timeout, isServer: true);

    /// <summary>Connects to the store hosted on <paramref name="host"/>:<paramref name="port"/>, waiting up to <paramref name="timeout"/> for it.</summary>
    public static TcpStore Connect(string host, int port, int worldSize, TimeSpan timeout) =>
        new(sdt_tcp_store_new(host, port, worldSize, 0, (long)timeout.TotalMilliseconds), host, worldSize, timeout, isServer: false);

    public string HostName { get; }

    public int Port { get; }

    public int WorldSize { get; }

    public TimeSpan Timeout { get; }

    public bool IsServer { get; }

    internal IntPtr Handle => handle != IntPtr.Zero ? handle : throw new ObjectDisposedException(nameof(TcpStore));

    /// <summary>A second connection to the same store (for a thread that must not wait behind this one's calls).</summary>
    public TcpStore NewClient(TimeSpan timeout) => Connect(HostName, Port, WorldSize, timeout);

    public unsafe void Set(string key, ReadOnlySpan<byte> value)
    {
        fixed (byte* p = value) Check(sdt_store_set(Handle, key, p, value.Length));
    }

    public void Set(string key, string value) => Set(key, Encoding.UTF8.GetBytes(value));

    /// <summary>The value of <paramref name="key"/>, waiting up to the timeout for some rank to set it.</summary>
    public unsafe byte[] Get(string key)
    {
        var buffer = new byte[256];
        while (true)
        {
            long length;
            fixed (byte* p = buffer) length = Check(sdt_store_get(Handle, key, p, buffer.Length));
            if (length <= buffer.Length) return buffer[..(int)length];
            buffer = new byte[length];
        }
    }

    public string GetString(string key) => Encoding.UTF8.GetString(Get(key));

    /// <summary>Adds <paramref name="delta"/> to the counter <paramref name="key"/> (created at 0) and returns its new value.</summary>
    public long Add(string key, long delta)
    {
        var value = sdt_store_add(Handle, key, delta);
        if (value == long.MinValue) ThrowIfError();
        return value;
    }

    public bool Contains(string key) => Check(sdt_store_check(Handle, key)) == 1;

    private void Free()
    {
        var h = Interlocked.Exchange(ref handle, IntPtr.Zero);
        if (h != IntPtr.Zero) sdt_store_free(h);
    }

    public void Dispose()
    {
        Free();
        GC.SuppressFinalize(this);
    }
}
