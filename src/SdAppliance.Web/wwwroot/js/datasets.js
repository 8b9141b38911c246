// The dataset page's uploads: each dropped or picked file goes in its own request (XHR, so the browser reports its
// upload progress), images before captions (a caption needs its image there). The component gets each file's progress
// and result through `dotnet` and shows them; the server checks everything.

const Concurrent = 3;

export function attach(zone, input, dotnet) {
    const prevent = e => { e.preventDefault(); e.stopPropagation(); };
    const over = e => { prevent(e); zone.classList.add('drop-over'); };
    const leave = e => { prevent(e); zone.classList.remove('drop-over'); };
    zone.addEventListener('dragenter', over);
    zone.addEventListener('dragover', over);
    zone.addEventListener('dragleave', leave);
    zone.addEventListener('drop', e => {
        leave(e);
        if (e.dataTransfer && e.dataTransfer.files) start(zone, dotnet, Array.from(e.dataTransfer.files));
    });
    input.addEventListener('change', () => {
        start(zone, dotnet, Array.from(input.files || []));
        input.value = '';
    });
    zone.dataset.ready = 'true';
}

export function pick(input) {
    input.click();
}

let counter = 0;

async function start(zone, dotnet, files) {
    if (files.length === 0) return;
    const url = zone.dataset.uploadUrl;
    const token = zone.dataset.token;
    const isCaption = f => f.name.toLowerCase().endsWith('.txt');
    const ordered = files.filter(f => !isCaption(f)).concat(files.filter(isCaption));
    const items = ordered.map(f => ({ id: `f${++counter}`, file: f }));
    await dotnet.invokeMethodAsync('Queued', items.map(i => ({ id: i.id, name: i.file.name, size: i.file.size })));
    const images = items.filter(i => !isCaption(i.file));
    const captions = items.filter(i => isCaption(i.file));
    await run(images, url, token, dotnet);
    await run(captions, url, token, dotnet);
    await dotnet.invokeMethodAsync('AllDone');
}

async function run(items, url, token, dotnet) {
    let next = 0;
    const worker = async () => {
        while (next < items.length) {
            const item = items[next++];
            await send(item, url, token, dotnet);
        }
    };
    await Promise.all(Array.from({ length: Math.min(Concurrent, items.length) }, worker));
}

function send(item, url, token, dotnet) {
    return new Promise(resolve => {
        const xhr = new XMLHttpRequest();
        let last = 0;
        xhr.upload.addEventListener('progress', e => {
            const now = Date.now();
            if (e.lengthComputable && (now - last > 150 || e.loaded === e.total)) {
                last = now;
                dotnet.invokeMethodAsync('Progress', item.id, e.loaded, e.total);
            }
        });
        const finish = (status, text) => {
            dotnet.invokeMethodAsync('Finished', item.id, status, text || '').finally(resolve);
        };
        xhr.addEventListener('load', () => finish(xhr.status, xhr.responseText));
        xhr.addEventListener('error', () => finish(0, ''));
        xhr.addEventListener('abort', () => finish(0, ''));
        xhr.open('POST', url);
        xhr.setRequestHeader('X-CSRF-TOKEN', token);
        const form = new FormData();
        form.append('file', item.file, item.file.name);
        xhr.send(form);
    });
}
