// A part of the page drawn from the prompter's views (gr.HTML's js_on_load; props.part names it:
// "status", "candidates", "legend" or "exports"). The prompter dispatches "sam-demo:view" with the
// HTML of each part whenever it shows a view, so a click's answer updates them with the mask.
// A button with data-candidate asks the prompter to show that candidate ("sam-demo:candidate"); the
// object list's buttons (data-select, data-hide, data-delete), name fields (data-rename), category
// pickers (data-category) and the category list (data-categories, sent when it loses focus) ask it
// to send that event ("sam-demo:object"). In the exports, the polygon tolerance the user typed is
// kept across views, and a polygon download (data-polygons) is asked for with it (?tolerance=), or
// not at all while the field says something out of range (told beside it).
const part = props.part;
let tolerance = null;  // the exports' polygon tolerance, as typed (null: the default)
document.addEventListener('sam-demo:view', (event) => {
  const html = event.detail && event.detail[part];
  if (typeof html !== 'string') return;
  // The category list stays open or closed as the user left it (the new HTML opens it only while empty).
  const was = element.querySelector('details.sd-categories');
  element.innerHTML = html;
  const list = element.querySelector('details.sd-categories');
  if (was && list) list.open = was.open;
  const field = element.querySelector('#polygon-tolerance');
  if (field && tolerance !== null) field.value = tolerance;
  // A problem told on the status line while it is out of sight (a phone, scrolled to the exports)
  // is brought into view.
  const alert = part === 'status' && element.querySelector('[role=alert]');
  if (alert) {
    const box = alert.getBoundingClientRect();
    if (box.bottom < 0 || box.top > window.innerHeight) alert.scrollIntoView({block: 'center'});
  }
});
// A tap on the status line opens it in full (a phone has no tooltip to show the rest), or closes it.
if (part === 'status') element.addEventListener('click', (event) => event.target.closest('.sd-status')?.classList.toggle('sd-open'));
const objectEvent = (detail) => document.dispatchEvent(new CustomEvent('sam-demo:object', {detail}));
element.addEventListener('click', (event) => {
  const link = event.target.closest('a[data-polygons]');
  const field = element.querySelector('#polygon-tolerance');
  if (link && field) {
    const problem = element.querySelector('#tolerance-problem');
    if (!field.checkValidity()) {
      event.preventDefault();
      if (problem) problem.textContent = `The polygon tolerance is ${field.min} to ${field.max} pixels; fix it to download polygons.`;
      field.focus();
      return;
    }
    if (problem) problem.textContent = '';
    const url = new URL(link.getAttribute('href'), document.baseURI);
    if (field.value === '') url.searchParams.delete('tolerance');  // the server's default
    else url.searchParams.set('tolerance', field.value);
    link.href = url.href;
  }
  const button = event.target.closest('[data-candidate], [data-select], [data-hide], [data-delete]');
  if (!button) return;
  const d = button.dataset;
  if (d.candidate !== undefined) document.dispatchEvent(new CustomEvent('sam-demo:candidate', {detail: {index: Number(d.candidate)}}));
  else if (d.select !== undefined) {
    objectEvent({type: 'select', object: Number(d.select)});
    // The next click refines it: the image comes into view if the list hid it (a phone).
    const stage = document.getElementById('prompter');
    const box = stage && stage.getBoundingClientRect();
    if (box && (box.bottom < 120 || box.top > window.innerHeight - 120)) {
      (document.getElementById('status') || stage).scrollIntoView({block: 'start'});
    }
  }
  else if (d.hide !== undefined) objectEvent({type: 'visibility', object: Number(d.hide), hidden: button.getAttribute('aria-pressed') !== 'true'});
  else objectEvent({type: 'delete', object: Number(d.delete)});
});
element.addEventListener('change', (event) => {
  const target = event.target;
  if (target.id === 'polygon-tolerance') {  // told at once, not only when a polygon link is clicked
    tolerance = target.value;
    const problem = element.querySelector('#tolerance-problem');
    if (problem) {
      problem.textContent = target.checkValidity()
        ? '' : `The polygon tolerance is ${target.min} to ${target.max} pixels; fix it to download polygons.`;
    }
  }
  else if (target.closest('[data-rename]')) objectEvent({type: 'rename', object: Number(target.dataset.rename), name: target.value});
  else if (target.closest('[data-category]')) objectEvent({type: 'category', object: Number(target.dataset.category), category: target.value});
  else if (target.closest('[data-categories]')) objectEvent({type: 'categories', names: target.value.split('\n')});
});
element.addEventListener('keydown', (event) => {
  const field = event.target.closest('[data-rename]');
  if (field && event.key === 'Enter') field.blur();  // blur fires "change": the name is sent once
});
